"""Load the example jobs' scripts as modules without putting their folders on sys.path for good.

The scripts import each other by bare name (``from make_shards import ...``), as they do when
run from their folder, so the folder is on sys.path only while a script is being loaded. Each
module is registered under a prefixed name (``digits_model_def``) so it cannot clash with other
tests that import some user's ``model_def``.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
DIGITS_DIR = EXAMPLES_DIR / "digits"


def load_script(folder: Path, stem: str) -> ModuleType:
    """Import ``folder/stem.py`` as ``<folder name>_<stem>``."""
    name = f"{folder.name}_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, folder / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def digits_job_files(folder: Path, shards: int = 2) -> dict[str, bytes | Path]:
    """The digits demo job folder (paths under jobs/{name}/ -> content), its `shards` shards
    written into `folder`."""
    written = load_script(DIGITS_DIR, "make_shards").make_shards(shards, folder)
    files: dict[str, bytes | Path] = {
        "scripts/model_def.py": DIGITS_DIR / "model_def.py",
        "requirements/requirements.txt": DIGITS_DIR / "requirements.txt",
    }
    files.update({f"shards/{shard.name}": shard for shard in written})
    return files
