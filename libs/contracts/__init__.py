"""Rondo's shared contracts: the events on the bus, the HTTP API schemas, subjects and settings.

This package is the only code the services share. Nothing here talks to a service; it only
describes what travels between them.
"""
