"""A real local stack for the CLI and SDK tests (one per test module, stopped after it), and
the environment of a user logged in to it."""

import os
from collections.abc import Iterator

import pytest
from support.platform import Platform, running_platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("cli-platform")) as platform:
        yield platform


@pytest.fixture(scope="module")
def cli_env(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a user logged in to the test stack (no profile of the machine's)."""
    env = {
        **os.environ,
        "RONDO_URL": platform.state.gateway_url,
        "RONDO_API_KEY": platform.state.user.api_key,
        "XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("config")),
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    return env
