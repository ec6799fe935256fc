"""The Rondo scheduler: job state machine, worker registry, placement and NVFlare runs.

Run it with `python -m rondo.scheduler`; it is configured by `RONDO_*` and
`RONDO_SCHEDULER_*` environment variables (`rondo.scheduler.config.SchedulerSettings`).
"""
