"""The NVFlare job folder a run submits: generated from the training config, or the user's own.

Generated (no `configs/` in the job): ScatterAndGather over the run's sites, weighted by
samples, `RondoPersistor`, `RondoExecutor` on the clients, the user's scripts in `custom/`.
Custom (the hosted format: `configs/config_fed_{server,client}.json`, `meta.json`, scripts):
run as given, except what a shared platform must control (see `patch_custom_app`).
Both get the `RoundReporter` and polling settings that keep per-round overhead low.
"""

import json
import shutil
from pathlib import Path
from typing import Any

from rondo.contracts.events import ServerAssignment
from rondo.contracts.layout import (
    CONFIGS,
    CONFIGS_DIR,
    MODEL_DEF_FILE,
    MODEL_DEF_KEY,
    SCRIPTS,
    SERVER_SITE,
)

APP_NAME = "app"
HOSTED_DATA_ROOT = "/app/payload"
# Clients see their own shard at <workspace>/rondo_data (a link the client agent makes).
CLIENT_DATA_LINK = "rondo_data"
SITE_DATA_ROOT = "{WORKSPACE}/" + CLIENT_DATA_LINK

_WORKER = "rondo.worker_agent"
_NVFLARE = "nvflare.app_common"
REPORTER_ID = "rondo_round_reporter"
GENERATED_WORKFLOW_ID = "scatter_and_gather"

# Polling that sets the floor of a round's overhead (see the NVFlare notes, "Making rounds fast").
TASK_CHECK_PERIOD_S = 0.05
STRAGGLER_WAIT_S = 10  # the hosted product's wait_time_after_min_received
CLIENT_TASK_FETCH_INTERVAL_S = 0.1
_QUANTIZATION_MARKERS = ("quantiz", "bitsandbytes")


class AppBuildError(ValueError):
    """The job's files cannot become an NVFlare job; the message is meant for the user."""


def task_request_interval(num_clients: int) -> float:
    """How long a client waits between task requests: 0.1 s, longer for many clients
    (each waiting client's poll costs server CPU)."""
    return min(1.0, max(0.1, 0.02 * num_clients))


def build_job_folder(
    job_files_dir: Path,
    dest: Path,
    assignment: ServerAssignment,
    initial_checkpoint: Path | None,
    job_name: str,
    spool_dir: Path,
    job_id: str = "",
) -> Path:
    """Write the job folder to submit for this run into `dest` (replaced) and return it.

    The RoundReporter of the run writes into `spool_dir` (absolute, on the server host)."""
    shutil.rmtree(dest, ignore_errors=True)
    app_dir = dest / APP_NAME
    (app_dir / "config").mkdir(parents=True)
    scripts = job_files_dir / SCRIPTS
    if scripts.is_dir():
        shutil.copytree(scripts, app_dir / "custom", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        (app_dir / "custom").mkdir()

    if not (app_dir / "custom" / MODEL_DEF_FILE).is_file():
        raise AppBuildError(f"the job has no {MODEL_DEF_KEY}")

    sites = list(assignment.site_names)
    if assignment.has_custom_app:
        server, client, meta = patch_custom_app(
            job_files_dir / CONFIGS, assignment, initial_checkpoint, spool_dir
        )
    else:
        server = generated_server_config(assignment, initial_checkpoint, spool_dir)
        client = generated_client_config(assignment, job_id)
        # Below this many sites NVFlare aborts the job: fewer than every site lets a run go on
        # without a lost worker (each round aggregating once that many answered).
        required = assignment.config.required_clients(len(sites))
        meta = {"resource_spec": {}, "min_clients": required}
    meta.setdefault("name", job_name)
    meta["deploy_map"] = {APP_NAME: [SERVER_SITE, *sites]}

    _write_json(app_dir / "config" / "config_fed_server.json", server)
    _write_json(app_dir / "config" / "config_fed_client.json", client)
    _write_json(dest / "meta.json", meta)
    return dest


# --- generated app -------------------------------------------------------------------------


def generated_server_config(
    assignment: ServerAssignment, initial_checkpoint: Path | None, spool_dir: Path
) -> dict[str, Any]:
    config = assignment.config
    sites = assignment.site_names
    required = config.required_clients(len(sites))
    return {
        "format_version": 2,
        "server": _server_section({}, assignment),
        "task_data_filters": [],
        "task_result_filters": [],
        "components": [
            {
                "id": "persistor",
                "path": f"{_WORKER}.flare_persistor.RondoPersistor",
                "args": {
                    "model_class": config.model_class,
                    "model_args": config.model_args,
                    "initial_checkpoint": str(initial_checkpoint) if initial_checkpoint else None,
                    "import_limit_s": assignment.timing.import_limit_s,
                },
            },
            {
                "id": "shareable_generator",
                "path": f"{_NVFLARE}.shareablegenerators.full_model_shareable_generator."
                "FullModelShareableGenerator",
                "args": {},
            },
            {
                # Weighs each site by the samples its executor reports.
                "id": "aggregator",
                "path": f"{_NVFLARE}.aggregators.intime_accumulate_model_aggregator."
                "InTimeAccumulateWeightedAggregator",
                "args": {
                    "expected_data_kind": "WEIGHTS",
                    "aggregation_weights": {site: 1.0 for site in sites},
                },
            },
            reporter_component(spool_dir),
            pacer_component(GENERATED_WORKFLOW_ID),
        ],
        "workflows": [
            {
                "id": GENERATED_WORKFLOW_ID,
                "path": f"{_NVFLARE}.workflows.scatter_and_gather.ScatterAndGather",
                "args": {
                    "min_clients": required,
                    "num_rounds": config.num_rounds - assignment.start_round,
                    "start_round": assignment.start_round,
                    # A round ends as soon as every site answered; with fewer sites required,
                    # the others get this long after the required answers are in.
                    "wait_time_after_min_received": (
                        0 if required == len(sites) else STRAGGLER_WAIT_S
                    ),
                    "aggregator_id": "aggregator",
                    "persistor_id": "persistor",
                    "shareable_generator_id": "shareable_generator",
                    "train_task_name": "train",
                    "train_timeout": 0,
                    # Every site's result counts: a failed training fails the run.
                    "ignore_result_error": False,
                    "task_check_period": TASK_CHECK_PERIOD_S,
                    # Resuming is the platform's job (from the spool's checkpoints).
                    "snapshot_every_n_rounds": 0,
                    # A full gc + malloc_trim costs ~0.3 s a round on the server; arrays are
                    # freed by reference counting anyway.
                    "memory_gc_rounds": 0,
                },
            }
        ],
    }


def generated_client_config(assignment: ServerAssignment, job_id: str) -> dict[str, Any]:
    config = assignment.config
    return {
        "format_version": 2,
        "default_task_fetch_interval": CLIENT_TASK_FETCH_INTERVAL_S,
        "executors": [
            {
                "tasks": ["train", "validate"],
                "executor": {
                    "path": f"{_WORKER}.flare_executor.RondoExecutor",
                    "args": {
                        "job_id": job_id,
                        "num_rounds": config.num_rounds,
                        "local_epochs": config.local_epochs,
                        "batch_size": config.batch_size,
                        "learning_rate": config.learning_rate,
                        "extra": config.extra,
                        "model_class": config.model_class,
                        "model_args": config.model_args,
                        "import_limit_s": assignment.timing.import_limit_s,
                    },
                },
            }
        ],
        "task_result_filters": [],
        "task_data_filters": [],
        "components": [],
    }


# --- custom (hosted-format) app ------------------------------------------------------------


def patch_custom_app(
    configs_dir: Path,
    assignment: ServerAssignment,
    initial_checkpoint: Path | None,
    spool_dir: Path,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The user's (server config, client config, meta), changed only where the platform must:
    heartbeat timeout and polling, our RoundReporter, resume (start round and weights),
    each client's data root, and no NVFlare resource requests (placement is ours)."""
    server = _read_json(configs_dir / "config_fed_server.json")
    client = _read_json(configs_dir / "config_fed_client.json")
    meta = _read_json(configs_dir / "meta.json")
    _reject_quantization(server, client)

    server["server"] = _server_section(server.get("server") or {}, assignment)
    components = server.setdefault("components", [])
    components.append(reporter_component(spool_dir))
    for workflow in server.get("workflows", []):
        if isinstance(workflow.get("id"), str):
            components.append(pacer_component(workflow["id"]))
    if initial_checkpoint:
        components.append(
            {
                "id": "rondo_initial_weights",
                "path": f"{_WORKER}.flare_persistor.InitialWeightsOverride",
                "args": {"checkpoint": str(initial_checkpoint)},
            }
        )
    if assignment.start_round:
        for workflow in server.get("workflows", []):
            _resume_workflow(workflow.get("args", {}), assignment.start_round)

    client = _replace_data_root(client)
    client.setdefault("default_task_fetch_interval", CLIENT_TASK_FETCH_INTERVAL_S)
    meta["resource_spec"] = {}
    meta["min_clients"] = len(assignment.site_names)
    return server, client, meta


def custom_app_num_rounds(configs_dir: Path) -> int | None:
    """Total rounds a custom app runs (its workflow's start_round + num_rounds), if stated."""
    server = _read_json(configs_dir / "config_fed_server.json")
    for workflow in server.get("workflows", []):
        args = workflow.get("args", {})
        if isinstance(args.get("num_rounds"), int):
            return int(args.get("start_round", 0)) + args["num_rounds"]
    return None


def _resume_workflow(args: dict[str, Any], start_round: int) -> None:
    """Make a round-based workflow start at `start_round` and still end at its last round."""
    if not isinstance(args.get("num_rounds"), int):
        return
    total = int(args.get("start_round", 0)) + args["num_rounds"]
    args["start_round"] = start_round
    args["num_rounds"] = max(total - start_round, 0)


def _replace_data_root(node: Any) -> Any:
    """Every '/app/payload...' string points at the client's own shard instead."""
    if isinstance(node, dict):
        return {key: _replace_data_root(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_replace_data_root(value) for value in node]
    if isinstance(node, str) and (
        node == HOSTED_DATA_ROOT or node.startswith(HOSTED_DATA_ROOT + "/")
    ):
        return SITE_DATA_ROOT + node[len(HOSTED_DATA_ROOT) :]
    return node


def _reject_quantization(*configs: dict[str, Any]) -> None:
    for path in _component_paths(configs):
        if any(marker in path.lower() for marker in _QUANTIZATION_MARKERS):
            raise AppBuildError(
                f"the app uses the quantization component '{path}', which needs bitsandbytes "
                "on every site; Rondo's workers do not provide it. Remove the quantization "
                "filters from configs/ and resubmit."
            )


def _component_paths(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["path"]] if isinstance(node.get("path"), str) else []
        return found + [p for value in node.values() for p in _component_paths(value)]
    if isinstance(node, list | tuple):
        return [p for value in node for p in _component_paths(value)]
    return []


# --- shared ---------------------------------------------------------------------------------


def reporter_component(spool_dir: Path) -> dict[str, Any]:
    return {
        "id": REPORTER_ID,
        "path": f"{_WORKER}.flare_reporter.RoundReporter",
        "args": {"spool_dir": str(spool_dir)},
    }


def pacer_component(workflow_id: str) -> dict[str, Any]:
    return {
        "id": f"rondo_task_check_pacer_{workflow_id}",
        "path": f"{_WORKER}.flare_pacing.TaskCheckPacer",
        "args": {"workflow_id": workflow_id, "period_s": TASK_CHECK_PERIOD_S},
    }


def _server_section(section: dict[str, Any], assignment: ServerAssignment) -> dict[str, Any]:
    """The job's `server` settings: a lost client is noticed after the platform's timeout."""
    return {
        "task_request_interval": task_request_interval(len(assignment.site_names)),
        **section,
        "heart_beat_timeout": assignment.timing.worker_lost_after_s,
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise AppBuildError(f"the custom app is missing {CONFIGS_DIR}{path.name}") from error
    except json.JSONDecodeError as error:
        raise AppBuildError(f"{CONFIGS_DIR}{path.name} is not valid JSON: {error}") from error


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2))
