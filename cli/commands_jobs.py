"""`rondo submit / jobs / status JOB / logs / metrics / cancel / stop / download`."""

import json
import time
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.live import Live
from rich.markup import escape

from rondo.cli_support import (
    ExitCode,
    JsonOption,
    cli_errors,
    console,
    errors,
    open_client,
    print_json,
    print_json_line,
    progress_bars,
)
from rondo.client import Client
from rondo.contracts.api import JobCreate, JobLogs, JobPublic, RoundPublic
from rondo.contracts.layout import source_name
from rondo.contracts.states import JobState
from rondo.contracts.training import GpuRequirements, TrainingConfig
from rondo.errors import InvalidInput, OutputsPending
from rondo.job import Job, JobUpdate
from rondo.job_folder import read_job_folder
from rondo.local_checks import check_local_job
from rondo.views import job_view, jobs_table, metrics_plots, rounds_table

LOG_POLL_INTERVAL_S = 1.0
# A watched job's last frame waits this long for its outputs to become final (usually well
# under a second after it ends), so it can say "outputs written" rather than "being written".
OUTPUTS_SHOWN_WITHIN_S = 10.0
DEFAULT_LOG_TAIL = 100

JobId = Annotated[str, typer.Argument(help="The job's id (rondo jobs lists them).")]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rondo` app."""
    for command in (submit, jobs, logs, metrics, cancel, stop, download):
        app.command()(command)


# --------------------------------------------------------------------------- submit


def parse_extra(pairs: list[str]) -> dict[str, Any]:
    """`--extra k=v` pairs; a value that reads as JSON (number, bool, list...) is taken as
    such, anything else as a string."""
    extra: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--extra")
        try:
            extra[key.strip()] = json.loads(raw)
        except ValueError:
            extra[key.strip()] = raw
    return extra


def _submission(name: str, config: dict[str, Any], gpu: dict[str, Any]) -> JobCreate:
    try:
        return JobCreate(
            name=name,
            config=TrainingConfig.model_validate(config),
            gpu=GpuRequirements.model_validate(gpu),
        )
    except ValidationError as error:
        faults = error.errors()
        message = "; ".join(
            f"{'.'.join(str(part) for part in fault['loc']) or 'value'}: {fault['msg']}"
            for fault in faults
        )
        bad_name = any(fault["loc"][:1] == ("name",) for fault in faults)
        hint = (
            "a name is lower-case letters, digits, - and _, e.g. digits-2"
            if bad_name
            else "rondo submit --help lists the options and their ranges"
        )
        raise InvalidInput(message, hint) from None


@cli_errors
def submit(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Job folder: model_def.py, requirements.txt, "
            "shards/*.zip (or scripts/ configs/ requirements/ "
            "shards/)."
        ),
    ],
    name: Annotated[str, typer.Option(help="Job (and bucket folder) name, e.g. digits.")],
    rounds: Annotated[int | None, typer.Option(help="FedAvg rounds (5).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Local epochs per round (2).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (32).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (0.001).")] = None,
    min_clients: Annotated[
        int | None, typer.Option(help="Workers needed to run (all shards).")
    ] = None,
    model_class: Annotated[
        str | None, typer.Option(help="Class in model_def.py (found if unset).")
    ] = None,
    gpu_model: Annotated[
        list[str] | None, typer.Option(help="Preferred GPU model; repeat in order.")
    ] = None,
    memory_mb: Annotated[
        int | None, typer.Option(help="Estimated GPU memory per worker (MB).")
    ] = None,
    extra: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE for payload['env']; repeatable.")
    ] = None,
    watch: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the job id (for scripts).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Upload a job folder (unchanged files are skipped) and submit it."""
    options = {
        "num_rounds": rounds,
        "local_epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": lr,
        "min_clients": min_clients,
        "model_class": model_class,
        "extra": parse_extra(extra or []),
    }
    gpu = {"gpu_models": gpu_model or [], "estimated_memory_mb": memory_mb}
    submission = _submission(name, {k: v for k, v in options.items() if v is not None}, gpu)
    local = read_job_folder(folder)
    # Refused before the login is even read: checking a folder needs no network. (The SDK's
    # submit_job checks again; reading a few ZIP directories twice costs nothing.)
    check_local_job(local, submission)
    with open_client() as client:
        with progress_bars() as bars:
            job, upload = client.submit_job(local, submission, bars)
        if as_json and not watch:
            print_json({"job": job.view, "upload": upload})
            return
        if quiet:
            print(job.id)
        elif not as_json:
            console.print(
                f"uploaded {len(upload.uploaded)} file(s) ({upload.bytes_sent / 2**20:.1f} MiB), "
                f"{len(upload.skipped)} unchanged"
                + (f", removed {len(upload.removed)} stale" if upload.removed else "")
            )
            console.print(f"submitted job [bold]{job.id}[/bold] ({escape(job.name)})")
            console.print(f"dashboard: {client.dashboard_link(job.id)}")
        if watch:
            raise typer.Exit(follow(client, job, as_json))


# --------------------------------------------------------------------------- watching


def follow(client: Client, job: Job, as_json: bool) -> ExitCode:
    """Follow a job until it ends (JSON lines, or a live view in place); the exit code says
    how it ended."""
    if as_json:
        final = job.wait(on_update=print_json_line)
    else:
        rounds = client.metrics(job.id).rounds
        with Live(job_view(job.view, rounds), console=console, auto_refresh=False) as live:

            def redraw(update: JobUpdate) -> None:
                if update.round is not None:
                    _merge_round(rounds, update.round)
                live.update(job_view(job.view, rounds), refresh=True)

            final = job.wait(on_update=redraw)
            with suppress(OutputsPending):
                job.wait_for_outputs(time.monotonic() + OUTPUTS_SHOWN_WITHIN_S)
            live.update(job_view(job.view, rounds), refresh=True)
    return ExitCode.OK if final.state == JobState.FINISHED else ExitCode.JOB_UNSUCCESSFUL


def _merge_round(rounds: list[RoundPublic], new: RoundPublic) -> None:
    """Keep one entry a round (a replacement run repeats rounds: the latest wins)."""
    rounds[:] = [r for r in rounds if r.round != new.round]
    rounds.append(new)
    rounds.sort(key=lambda r: r.round)


@cli_errors
def show_status(job_id: str, watch: bool, as_json: bool) -> None:
    """`rondo status JOB`: the job's state, workers and rounds (live with `watch`)."""
    with open_client() as client:
        job = client.job(job_id)
        if watch:
            raise typer.Exit(follow(client, job, as_json))
        if as_json:
            print_json(job.view)
        else:
            console.print(job_view(job.view, client.metrics(job_id).rounds))


# --------------------------------------------------------------------------- listing


@cli_errors
def jobs(
    state: Annotated[JobState | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Your jobs, newest first."""
    with open_client() as client:
        listing = client.jobs(state=state, limit=limit)
    if as_json:
        print_json(listing)
    else:
        console.print(jobs_table(listing.items, listing.total))


@cli_errors
def logs(
    job_id: JobId,
    worker: Annotated[
        int | None, typer.Option(min=0, help="A worker's log (slot n) instead of the server's.")
    ] = None,
    server: Annotated[bool, typer.Option(help="The FL server's log (the default).")] = False,
    tail: Annotated[int, typer.Option(min=1, help="Lines to show first.")] = DEFAULT_LOG_TAIL,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """A job's server log, or one worker's."""
    if server and worker is not None:
        raise typer.BadParameter("give --worker N or --server, not both")
    source = source_name(worker)
    with open_client() as client:
        chunk = client.logs(job_id, source, tail=tail)
        _print_log(chunk, as_json)
        if chunk.total == 0 and not as_json:
            errors.print(
                f"no {source} log lines here; the complete log, once written, is in your "
                f"bucket at {chunk.file_key}"
            )
        next_line = chunk.first_line + len(chunk.lines)
        while follow_:
            ended = client.get_job(job_id).state.is_terminal
            chunk = client.logs(job_id, source, start=next_line)
            if chunk.lines:
                _print_log(chunk, as_json)
                next_line = chunk.first_line + len(chunk.lines)
            elif ended:
                break
            else:
                time.sleep(LOG_POLL_INTERVAL_S)


def _print_log(chunk: JobLogs, as_json: bool) -> None:
    if as_json:
        print_json_line(chunk)
    else:
        for line in chunk.lines:
            print(line)


@cli_errors
def metrics(
    job_id: JobId,
    plot: Annotated[bool, typer.Option(help="Draw each metric as a terminal chart.")] = False,
    as_json: JsonOption = False,
) -> None:
    """A job's metrics, one row per completed round."""
    with open_client() as client:
        result = client.metrics(job_id)
    if as_json:
        print_json(result)
    elif not result.rounds:
        console.print("no round completed yet")
    else:
        console.print(rounds_table(result.rounds))
        if plot:
            console.print(metrics_plots(result))


# --------------------------------------------------------------------------- control


def _print_requested(job: JobPublic, what: str, as_json: bool) -> None:
    if as_json:
        print_json(job)
    else:
        console.print(f"{what} of job {job.id} ({escape(job.name)}) requested")


@cli_errors
def cancel(job_id: JobId, as_json: JsonOption = False) -> None:
    """Cancel a job: it ends CANCELLED, partial outputs kept."""
    with open_client() as client:
        _print_requested(client.cancel(job_id), "cancellation", as_json)


@cli_errors
def stop(job_id: JobId, as_json: JsonOption = False) -> None:
    """Stop a job after its completed rounds: it ends FINISHED with their outputs."""
    with open_client() as client:
        _print_requested(client.stop(job_id), "stop", as_json)


@cli_errors
def download(
    job_id: JobId,
    round_: Annotated[
        int | None, typer.Option("--round", min=0, help="That round's checkpoint, not the final.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: its name).")
    ] = None,
) -> None:
    """Download a job's model (model_out/), verified against its checksum."""
    with open_client() as client:
        job = client.job(job_id)
        with progress_bars() as bars:
            path = job.download_model(round_, output, bars)
    console.print(f"saved {path} ({path.stat().st_size / 2**20:.2f} MiB, checksum verified)")
