"""Predict one training iteration: a SimPy simulation and an analytic estimator."""
