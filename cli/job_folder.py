"""A job folder on the user's disk, and where each of its files goes under `jobs/{name}/`.

Two layouts are accepted:

- the short one: `model_def.py`, `requirements.txt` (optional), `shards/*.zip`, and optional
  `configs/` (an NVFlare app of one's own) and `model/` (a checkpoint to start from);
- the hosted product's SDK layout, as in the bucket: `scripts/` (model_def.py and any custom
  executor or persistor), `configs/`, `requirements/requirements.txt`, `shards/*.zip`,
  optional `model/`.

A folder with a `scripts/` subfolder is read as the second.
"""

import inspect
from pathlib import Path

from pydantic import BaseModel

from rondo.contracts.layout import (
    CONFIGS,
    CONFIGS_DIR,
    MODEL,
    MODEL_DEF_FILE,
    MODEL_DEF_KEY,
    REQUIREMENTS,
    REQUIREMENTS_FILE,
    REQUIREMENTS_KEY,
    SCRIPTS,
    SHARD_SUFFIX,
    SHARDS,
    SHARDS_DIR,
)
from rondo.errors import InvalidInput

# Folders under jobs/{name}/ whose stale files would change what runs: a shard left over from
# an earlier submission becomes an extra worker, a leftover configs/ turns the job into a custom
# app. A submission removes what the local folder no longer has there, and nowhere else (a
# warm-start checkpoint under model/ may exist only in the bucket).
MIRRORED_FOLDERS = (SHARDS_DIR, CONFIGS_DIR)


class LocalJob(BaseModel):
    """The files of one job: path under `jobs/{name}/` -> local file."""

    files: dict[str, Path]

    @property
    def shards(self) -> list[str]:
        return sorted(key for key in self.files if key.startswith(SHARDS_DIR))


def _visible_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _folder_files(root: Path, folder: str) -> dict[str, Path]:
    base = root / folder
    return {f"{folder}/{p.relative_to(base).as_posix()}": p for p in _visible_files(base)}


def _shard_files(shards_dir: Path) -> dict[str, Path]:
    if not shards_dir.is_dir():
        raise InvalidInput(
            f"{shards_dir} is not a folder",
            "put one shard ZIP per worker there (rondo shards make DATA --workers N --out DIR)",
        )
    zips = sorted(p for p in shards_dir.iterdir() if p.is_file() and p.suffix == SHARD_SUFFIX)
    return {SHARDS_DIR + path.name: path for path in zips}


def read_job_folder(root: Path) -> LocalJob:
    """The files of the job folder `root`, in either layout."""
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a folder", "give the folder that holds your job")
    files: dict[str, Path] = {}
    if (root / SCRIPTS).is_dir():
        for folder in (SCRIPTS, CONFIGS, REQUIREMENTS, MODEL):
            files.update(_folder_files(root, folder))
    else:
        if (root / MODEL_DEF_FILE).is_file():
            files[MODEL_DEF_KEY] = root / MODEL_DEF_FILE
        if (root / REQUIREMENTS_FILE).is_file():
            files[REQUIREMENTS_KEY] = root / REQUIREMENTS_FILE
        files.update(_folder_files(root, CONFIGS))
        files.update(_folder_files(root, MODEL))
    if (root / SHARDS).is_dir():
        files.update(_shard_files(root / SHARDS))
    return LocalJob(files=files)


def job_from_parts(model: type | Path, shards_dir: Path, requirements: Path) -> LocalJob:
    """A job made of a model (its class, or the path of its model_def.py), a folder of shard
    ZIPs and a requirements file."""
    model_def = _model_file(model) if isinstance(model, type) else Path(model)
    if not model_def.is_file():
        raise InvalidInput(f"{model_def} is not a file", "give the path of your model_def.py")
    files = {
        MODEL_DEF_KEY: model_def,
        REQUIREMENTS_KEY: requirements,
        **_shard_files(shards_dir),
    }
    return LocalJob(files=files)


def _model_file(model: type) -> Path:
    """The file defining `model`: it is uploaded as model_def.py."""
    try:
        return Path(inspect.getfile(model))
    except TypeError:
        raise InvalidInput(
            f"{model.__name__} is not defined in a file (a notebook or the interpreter?)",
            "move the class and fl_train_model into a model_def.py and pass its path",
        ) from None
