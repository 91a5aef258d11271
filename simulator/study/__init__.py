"""The study's systems as placements, its table of them, its development set and what-if sweeps."""
