"""Rondo artifacts service: the only writer of `jobs/{name}/files_out/` and `model_out/`.

It consumes `round.completed`, `artifact.staged`, `logs.*`, `job.finished` and `job.failed`,
copies staged bytes out of the NATS object store into the user's bucket, renders the per-job
reports and assembles the NVFlare logs. Run it with `python -m rondo.artifacts`.
"""
