"""The analytic estimator: an iteration timed from the structure of its schedules, fast enough
for a search loop."""
