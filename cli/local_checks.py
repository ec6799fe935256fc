"""The API's job-folder checks (`rondo.contracts.job_checks`) applied to local files, so a job
the platform would refuse is refused before anything is uploaded, with the same message.

Problems name a file by the bucket key it would have (`jobs/{name}/shards/shard_0.zip`), as
the gateway does; shards made by `rondo shards make` are named by their local path.
"""

import zipfile
import zlib
from pathlib import Path

from rondo.contracts.api import JobCreate
from rondo.contracts.job_checks import (
    MANIFEST_NAME,
    ArchiveLimits,
    Problem,
    ProblemCode,
    check_app_config,
    check_manifest,
    check_min_clients,
    check_model_def,
    check_requirements,
    check_shard_directory,
    manifest_entry,
)
from rondo.errors import InvalidInput
from rondo.job_folder import LocalJob

MODEL_DEF_KEY = "scripts/model_def.py"
REQUIREMENTS_KEY = "requirements/requirements.txt"
CUSTOM_APP_FILES = (
    "configs/config_fed_server.json",
    "configs/config_fed_client.json",
    "configs/meta.json",
)


def shard_problems(path: Path, name: str, limits: ArchiveLimits | None = None) -> list[Problem]:
    """Problems of one shard ZIP on disk; `name` is how messages call it."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            problems = check_shard_directory(entries, name, limits or ArchiveLimits())
            manifest = manifest_entry(entries)
            # As the gateway does: a manifest entry that is itself unsafe is not read.
            readable = not any(problem.entry == MANIFEST_NAME for problem in problems)
            if manifest is not None and readable:
                content = archive.read(manifest)
                names = [info.filename for info in entries]
                problems += check_manifest(content, name, names)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as error:
        return [
            Problem(
                code=ProblemCode.INVALID_ZIP,
                message=f"{name} is not a readable ZIP file ({error})",
                hint="re-create it with `zip -r` or `rondo shards make` and upload it again",
                path=name,
            )
        ]
    return problems


def job_problems(local: LocalJob, submission: JobCreate) -> list[Problem]:
    """Every problem the API would find in this job folder, plus the missing files."""
    prefix = f"jobs/{submission.name}/"
    files = local.files
    config = submission.config
    problems: list[Problem] = []
    custom_app = any(key.startswith("configs/") for key in files)

    if MODEL_DEF_KEY in files:
        # A custom app's own executor decides which functions and class it uses.
        problems += check_model_def(
            files[MODEL_DEF_KEY].read_bytes(),
            prefix + MODEL_DEF_KEY,
            needs_train_function=not custom_app,
            model_class=None if custom_app else config.model_class,
        )
    else:
        problems.append(
            _missing(prefix + MODEL_DEF_KEY, "add your model class and fl_train_model function")
        )
    if REQUIREMENTS_KEY in files:
        problems += check_requirements(
            files[REQUIREMENTS_KEY].read_bytes(), prefix + REQUIREMENTS_KEY
        )
    else:
        problems.append(
            _missing(
                prefix + REQUIREMENTS_KEY,
                "add requirements.txt; an empty file is fine when the job needs no extra packages",
            )
        )
    if custom_app:
        for key in CUSTOM_APP_FILES:
            if key not in files:
                problems.append(
                    _missing(
                        prefix + key,
                        "a custom NVFlare app needs configs/config_fed_server.json, "
                        "config_fed_client.json and meta.json; or remove configs/ to let Rondo "
                        "generate the app",
                    )
                )
            else:
                problems += check_app_config(files[key].read_bytes(), prefix + key)

    shards = local.shards
    if not shards:
        problems.append(
            Problem(
                code=ProblemCode.MISSING_SHARDS,
                message=f"no .zip shard in {prefix}shards/",
                hint="put one shard ZIP per worker under shards/ "
                "(rondo shards make DATA --workers N --out DIR/shards)",
                path=prefix + "shards/",
            )
        )
    for key in shards:
        problems += shard_problems(files[key], prefix + key)
    problems += check_min_clients(config.min_clients, len(shards), prefix + "shards/")
    return problems


def _missing(key: str, hint: str) -> Problem:
    return Problem(
        code=ProblemCode.MISSING_FILE,
        message=f"{key} is missing from your job folder",
        hint=hint,
        path=key,
    )


def refuse(problems: list[Problem]) -> None:
    """Raise `InvalidInput` for the problems (no-op when there is none): the first one's
    message and hint, as the API words its refusal, and every problem attached."""
    if not problems:
        return
    first, more = problems[0], len(problems) - 1
    message = first.message
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    raise InvalidInput(message, first.hint, problems=problems)


def check_local_job(local: LocalJob, submission: JobCreate) -> None:
    """Refuse (`InvalidInput`) a job the API would refuse."""
    refuse(job_problems(local, submission))


def check_shard(path: Path, name: str) -> None:
    """Refuse (`InvalidInput`) a shard ZIP the platform would refuse; `name` is how messages
    call it."""
    refuse(shard_problems(path, name))
