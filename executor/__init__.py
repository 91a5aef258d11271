"""Runs a plan for real on torch.distributed (executor/cli.py: `executor run`)."""
