"""Where a job's files live in the user's bucket, and how FL sites are named.

A job folder is `jobs/{name}/` in the user's bucket. The user (CLI, SDK) uploads its inputs, the
gateway checks them, the scheduler hands them to agents, the agents stage per-round files, and
artifacts writes the outputs; each of those spells a key through this module only:

- inputs: `scripts/model_def.py`, `requirements/requirements.txt`, `shards/*.zip`, optional
  `configs/` (a custom NVFlare app) and `model/` (a starting checkpoint);
- outputs: `files_out/metrics.json`, `files_out/training_log.txt`,
  `files_out/fl_round_complete.json`, `files_out/server.log`, `files_out/client_{n}.log`,
  `files_out/client_{n}/round_{r}/<user path>` (staged `out_dir` files),
  `model_out/global_model.pt`, `model_out/model_round_{r}.pt`, `model_out/best_model.pt`.

Site names: the FL server's NVFlare site is `server`; client slot `n`'s NVFlare site is
`site-{n}-{generation}`; outputs, logs and reports name that slot `client_{n}`.

Folder constants end without `/`; `*_DIR` constants are the same folders with the slash, for
prefix tests and listings.
"""

import re

# --- sites ------------------------------------------------------------------------------------

SERVER_SITE = "server"  # NVFlare's site name of the FL server, and its log source
CLIENT_PREFIX = "client_"
# NVFlare site name of client slot `n` in its `g`-th generation (a replacement is a new site).
FLARE_CLIENT_SITE = re.compile(r"^site-(\d+)-\d+$")


def flare_client_site(slot: int, generation: int) -> str:
    """`site-{slot}-{generation}`: the NVFlare site name of a client slot's current worker."""
    return f"site-{slot}-{generation}"


def flare_site_slot(site: str) -> int | None:
    """The slot of an NVFlare client site name (`site-<slot>-<gen>`), or None."""
    match = FLARE_CLIENT_SITE.match(site)
    return int(match.group(1)) if match else None


def client_name(slot: int) -> str:
    """`client_{slot}`: how outputs, logs and reports name client slot `slot`."""
    return f"{CLIENT_PREFIX}{slot}"


def source_name(slot: int | None) -> str:
    """A log source: `server` for `None`, else `client_{slot}`."""
    return SERVER_SITE if slot is None else client_name(slot)


# --- the job folder ---------------------------------------------------------------------------

SCRIPTS = "scripts"
REQUIREMENTS = "requirements"
SHARDS = "shards"
CONFIGS = "configs"
MODEL = "model"
FILES_OUT = "files_out"
MODEL_OUT = "model_out"

SCRIPTS_DIR = SCRIPTS + "/"
REQUIREMENTS_DIR = REQUIREMENTS + "/"
SHARDS_DIR = SHARDS + "/"
CONFIGS_DIR = CONFIGS + "/"
MODEL_DIR = MODEL + "/"

SHARD_SUFFIX = ".zip"  # a shard is one ZIP directly under shards/
MODEL_DEF_FILE = "model_def.py"
REQUIREMENTS_FILE = "requirements.txt"
MODEL_DEF_KEY = f"{SCRIPTS}/{MODEL_DEF_FILE}"
REQUIREMENTS_KEY = f"{REQUIREMENTS}/{REQUIREMENTS_FILE}"

SERVER_CONFIG_FILE = "config_fed_server.json"
CLIENT_CONFIG_FILE = "config_fed_client.json"
META_FILE = "meta.json"
# The files a custom NVFlare app under configs/ must have.
CUSTOM_APP_FILES = (SERVER_CONFIG_FILE, CLIENT_CONFIG_FILE, META_FILE)
CUSTOM_APP_KEYS = tuple(f"{CONFIGS}/{name}" for name in CUSTOM_APP_FILES)
SERVER_CONFIG_KEY = f"{CONFIGS}/{SERVER_CONFIG_FILE}"

# Folders of a job that agents download (shards go to their own slot only, outputs never).
JOB_FILE_FOLDERS = (SCRIPTS_DIR, CONFIGS_DIR, REQUIREMENTS_DIR, MODEL_DIR)


def job_prefix(name: str) -> str:
    """`jobs/{name}/`: the folder of job `name` in its owner's bucket."""
    return f"jobs/{name}/"


def normalize_prefix(prefix: str) -> str:
    """`jobs/digits` and `/jobs/digits/` both become `jobs/digits/`."""
    cleaned = prefix.strip("/")
    if not cleaned:
        raise ValueError("a job prefix may not be empty")
    return cleaned + "/"


# --- outputs ----------------------------------------------------------------------------------

METRICS_JSON = "metrics.json"
TRAINING_LOG = "training_log.txt"
ROUNDS_JSON = "fl_round_complete.json"
GLOBAL_MODEL = "global_model.pt"
BEST_MODEL = "best_model.pt"
LOG_SUFFIX = ".log"

# Files under files_out/ that only artifacts renders; a staged user file may not replace them.
REPORT_FILES = frozenset({METRICS_JSON, TRAINING_LOG, ROUNDS_JSON})


def model_round_name(round_number: int) -> str:
    """`model_round_{r}.pt`: the checkpoint of round `r` under `model_out/`."""
    return f"model_round_{round_number}.pt"


def model_file_name(round_number: int | None) -> str:
    """`global_model.pt` (the latest) for `None`, else `model_round_{r}.pt`."""
    return GLOBAL_MODEL if round_number is None else model_round_name(round_number)


def model_out_key(prefix: str, name: str) -> str:
    """`{prefix}model_out/{name}` for a job folder `prefix` (`jobs/{name}/`)."""
    return f"{prefix}{MODEL_OUT}/{name}"


def files_out_key(prefix: str, name: str) -> str:
    """`{prefix}files_out/{name}` for a job folder `prefix` (`jobs/{name}/`)."""
    return f"{prefix}{FILES_OUT}/{name}"


def log_file_name(source: str) -> str:
    """`server.log` or `client_{n}.log` for a log source (a site name)."""
    return f"{source}{LOG_SUFFIX}"


def is_log_file_name(name: str) -> bool:
    """`server.log` or `client_<n>.log`: names the log assembler owns."""
    if name == log_file_name(SERVER_SITE):
        return True
    stem = name.removeprefix(CLIENT_PREFIX).removesuffix(LOG_SUFFIX)
    return name.startswith(CLIENT_PREFIX) and name.endswith(LOG_SUFFIX) and stem.isdigit()


def staged_output_path(slot: int, round_number: int, relpath: str) -> str:
    """`files_out/client_{n}/round_{r}/{relpath}`: where a client's per-round file lands,
    relative to the job folder."""
    return f"{FILES_OUT}/{client_name(slot)}/round_{round_number}/{relpath}"
