"""Rondo gateway: the HTTP API, users and API keys, and the read model of jobs.

Run it with `python -m rondo.gateway`; manage users with `python -m rondo.gateway.manage`.
"""
