"""Rondo: self-hosted federated learning on a fleet of GPU workers.

This package holds the `rondo` command (CLI and the local embedded stack). The services live in
`rondo.gateway`, `rondo.scheduler`, `rondo.worker_agent` and `rondo.artifacts`; what they share
is in `rondo.contracts`.
"""
