"""The program both engines read, and the lowering of a placement and its runtime into it."""
