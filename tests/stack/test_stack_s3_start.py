"""`rondo up` starting SeaweedFS when one of the ports it was given is taken meanwhile: it
exits, and the stack starts it once more on fresh ports, with one process on record."""

import socket
import time
from pathlib import Path

from rondo.contracts.storage import make_s3_client
from rondo.stack.health import S3_PART
from rondo.stack.local import LocalStack
from rondo.stack.servers import write_s3_config
from rondo.stack.state import new_state, save_state


def test_seaweedfs_that_lost_a_port_starts_again_on_fresh_ports(tmp_path: Path) -> None:
    lines: list[str] = []
    stack = LocalStack(tmp_path / "stack", progress=lines.append)
    state = new_state(stack.data_dir, workers=1)
    state.logs_dir.mkdir(parents=True)
    write_s3_config(state.s3_config_path, [state.s3_admin])
    save_state(state)
    taken = state.ports.seaweed["s3"]
    try:
        with socket.create_server((state.host, taken)):
            stack._start_s3(state, deadline=time.monotonic() + 60)
        assert "SeaweedFS exited while starting: retrying on fresh ports" in lines
        assert state.ports.seaweed["s3"] != taken
        assert state.processes[S3_PART].process() is not None
        endpoint = f"http://{state.host}:{state.ports.seaweed['s3']}"
        admin = make_s3_client(endpoint, state.s3_admin.access_key, state.s3_admin.secret_key)
        assert "Buckets" in admin.list_buckets()
    finally:
        stack.down()
