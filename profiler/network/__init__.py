"""The network model every package shares: routes through a cluster's resources, their max-min
fair shares, and TCP as long links meet it."""
