"""Runs a plan for real on torch.distributed (not built yet: see the executor issue)."""
