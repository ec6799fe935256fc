"""The worker-agent: one per GPU host; runs the NVFlare server and client processes of runs.

`python -m rondo.worker_agent` starts it; `agent.py` wires the bus, `run_manager.py` owns the
runs. See docs/design.md for the flow and the spool format.
"""
