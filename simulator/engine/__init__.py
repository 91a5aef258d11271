"""The SimPy engine: a program's streams run op by op over a fluid max-min flow network."""
