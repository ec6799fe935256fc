"""One fault stack (three worker-agents, short liveness timings) shared by this folder's tests
that run on loopback; tests/faults/test_network_partition.py starts its own."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.faults import fault_stack
from support.platform import Platform


@pytest.fixture(scope="package")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with fault_stack(Path(tmp_path_factory.mktemp("faults")), workers=3) as platform:
        yield platform
