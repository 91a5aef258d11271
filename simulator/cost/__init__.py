"""What each piece of a job costs: per-op seconds and bytes on a cluster, memory, and compute that
ranks share."""
