"""A real local stack (`rondo up`) for the validation and failure tests of this folder, with
limits short enough that each failure happens in seconds."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.platform import Platform

from rondo.stack.local import LocalStack

# Every NVFlare process may allocate this much; a client's job process needs about 460 MB
# (VmData) to train a small model, so a model_def allocating 2 GiB fails with an OOM.
MEMORY_LIMIT_MB = 1024
REQUIREMENTS_TIMEOUT_S = 5


@pytest.fixture(scope="package")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    stack = LocalStack(Path(tmp_path_factory.mktemp("validation-platform")))
    # The services inherit the environment `up` runs in.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RONDO_AGENT_MEMORY_LIMIT_MB", str(MEMORY_LIMIT_MB))
        env.setenv("RONDO_AGENT_REQUIREMENTS_TIMEOUT_S", str(REQUIREMENTS_TIMEOUT_S))
        result = stack.up(workers=1)
    platform = Platform(stack=stack, state=result.state)
    yield platform
    platform.api.close()
    stack.down()
    assert not platform.stack_processes(), "rondo down left processes behind"
