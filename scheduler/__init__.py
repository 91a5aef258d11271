"""Placements of a training job on a cluster: layouts now, searches later."""
