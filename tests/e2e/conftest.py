"""One real local stack (`rondo up`) shared by the end-to-end tests of this folder."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.platform import Platform

from rondo.stack.local import LocalStack


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    stack = LocalStack(Path(tmp_path_factory.mktemp("platform")))
    result = stack.up(workers=2)
    platform = Platform(stack=stack, state=result.state)
    yield platform
    platform.api.close()
    stack.down()
    assert not platform.stack_processes(), "rondo down left processes behind"
