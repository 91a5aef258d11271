"""`sim`, the simulator's command line: one module per command family (predict, plan, runs,
tables), what they read alike (common), and the parser and dispatch (main)."""
