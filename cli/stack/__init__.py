"""The local, embedded Rondo stack: real servers and services as supervised child processes."""
