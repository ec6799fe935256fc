"""Helpers shared by the test suites (tests/ is on sys.path via pytest `pythonpath`)."""
