"""Importing the job's model_def inside an NVFlare process: a hung import ends at its limit
with an error the scheduler classifies as a worker timeout; a quick one is the module."""

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rondo.contracts.events import FailureCause
from rondo.scheduler.failures import classify
from rondo.worker_agent.flare_model import MODEL_DEF_MODULE, import_model_def


@pytest.fixture
def custom_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path as NVFlare's app custom/ folder is; model_def forgotten after."""
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop(MODEL_DEF_MODULE, None)


def test_a_quick_import_returns_the_module(custom_dir: Path) -> None:
    (custom_dir / "model_def.py").write_text("ANSWER = 42\n")

    assert import_model_def(limit_s=30).ANSWER == 42


def test_an_import_error_is_raised_as_is(custom_dir: Path) -> None:
    (custom_dir / "model_def.py").write_text("nnx.Linear(4, 1)\n")

    with pytest.raises(NameError, match="nnx"):
        import_model_def(limit_s=30)


def test_a_hung_import_fails_at_its_limit_as_a_worker_timeout(custom_dir: Path) -> None:
    (custom_dir / "model_def.py").write_text("import time\ntime.sleep(3)\n")

    started = time.monotonic()
    with pytest.raises(TimeoutError) as raised:
        import_model_def(limit_s=0.5)

    assert time.monotonic() - started < 2
    for thread in threading.enumerate():  # let the import end before the module is forgotten
        if thread.name == "import-model_def":
            thread.join()
    message = f"{type(raised.value).__name__}: {raised.value}"
    assert "importing model_def.py took longer than 0.5 s" in message
    assert classify(message).cause == FailureCause.WORKER_TIMEOUT
