"""The API's job-folder checks (`rondo.contracts.job_checks`) applied to local files, so a job
the platform would refuse is refused before anything is uploaded, with the same message.

Problems name a file by the bucket key it would have (`jobs/{name}/shards/shard_0.zip`), as
the gateway does; shards made by `rondo shards make` are named by their local path.
"""

from pathlib import Path

from rondo.contracts import job_checks
from rondo.contracts.api import JobCreate
from rondo.contracts.job_checks import (
    ArchiveLimits,
    Problem,
    ProblemCode,
    check_app_config,
    check_min_clients,
    check_model_def,
    check_requirements,
    unreadable_zip,
)
from rondo.contracts.layout import (
    CONFIGS_DIR,
    CUSTOM_APP_KEYS,
    MODEL_DEF_KEY,
    REQUIREMENTS_KEY,
    SHARDS_DIR,
    job_prefix,
)
from rondo.errors import InvalidInput
from rondo.job_folder import LocalJob

LOCAL_ZIP_HINT = "re-create it with `zip -r` or `rondo shards make` and upload it again"


def shard_problems(path: Path, name: str, limits: ArchiveLimits | None = None) -> list[Problem]:
    """Problems of one shard ZIP on disk, by the gateway's own check; `name` is how messages
    call it."""
    try:
        with path.open("rb") as archive_file:
            return job_checks.check_shard(
                archive_file, name, limits or ArchiveLimits(), LOCAL_ZIP_HINT
            )
    except OSError as error:
        return [unreadable_zip(name, error, LOCAL_ZIP_HINT)]


def job_problems(local: LocalJob, submission: JobCreate) -> list[Problem]:
    """Every problem the API would find in this job folder, plus the missing files."""
    prefix = job_prefix(submission.name)
    files = local.files
    config = submission.config
    problems: list[Problem] = []
    custom_app = any(key.startswith(CONFIGS_DIR) for key in files)

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
        for key in CUSTOM_APP_KEYS:
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
                message=f"no .zip shard in {prefix}{SHARDS_DIR}",
                hint="put one shard ZIP per worker under shards/ "
                "(rondo shards make DATA --workers N --out DIR/shards)",
                path=prefix + SHARDS_DIR,
            )
        )
    for key in shards:
        problems += shard_problems(files[key], prefix + key)
    problems += check_min_clients(config.min_clients, len(shards), prefix + SHARDS_DIR)
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
