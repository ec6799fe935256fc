"""Fixtures giving the digits example's scripts as modules (see support.examples)."""

from types import ModuleType

import pytest
from support.examples import DIGITS_DIR, load_script


@pytest.fixture(scope="session")
def make_shards_module() -> ModuleType:
    return load_script(DIGITS_DIR, "make_shards")


@pytest.fixture(scope="session")
def model_def() -> ModuleType:
    return load_script(DIGITS_DIR, "model_def")


@pytest.fixture(scope="session")
def run_demo() -> ModuleType:
    return load_script(DIGITS_DIR, "run_demo")
