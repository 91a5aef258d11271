"""What the simulator writes and draws: tables, charts, timelines, reports, validations."""
