"""Descriptions of what exists (clusters, GPU kinds, models) and, later, measurements of it."""
