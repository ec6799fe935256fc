"""The `rondo` command: the local stack (`up`, `down`, `status`, `env`), traces, CLI login.

Jobs, files and shards commands live in `commands_*` modules, registered below.
"""

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from rondo import commands_files, commands_jobs, commands_shards, users_cli
from rondo.cli_support import CliOptions
from rondo.profile import Profile, save_profile
from rondo.stack.local import LocalStack, StackError, StackStatus, UpResult
from rondo.stack.state import StackState, load_state
from rondo.traces import SpanNode, job_traces, read_spans
from rondo.worker_agent.sandbox import can_switch_users, closed_folders

main = typer.Typer(
    name="rondo",
    help="Rondo: federated-learning jobs on a fleet of GPU workers.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)
commands_jobs.register(main)
main.add_typer(commands_files.app)
main.add_typer(commands_shards.app)
main.add_typer(users_cli.app)


@main.callback()
def _options(
    debug: Annotated[bool, typer.Option(help="Show tracebacks of errors.")] = False,
) -> None:
    CliOptions.debug = debug


DataDir = Annotated[
    Path,
    typer.Option("--data-dir", "-d", help="The local stack's folder: state, logs, data."),
]
DEFAULT_DATA_DIR = Path(".rondo")


@main.command()
def up(
    workers: Annotated[int, typer.Option("--workers", "-w", min=0, help="Worker-agents.")] = 2,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every part.")] = 120,
    login: Annotated[bool, typer.Option(help="Write the CLI profile for this stack.")] = True,
    trust_user_code: Annotated[
        bool,
        typer.Option(
            "--trust-user-code",
            help="Run jobs' code as the workers' own user, unsandboxed (only if you trust "
            "every job). Without it, workers sandbox user code when run as root and refuse "
            "jobs otherwise.",
        ),
    ] = False,
) -> None:
    """Start the local stack (NATS, SeaweedFS S3, the services, N worker-agents) and log in."""
    stack = LocalStack(
        data_dir,
        progress=lambda line: console.print(f"[dim]· {line}[/dim]"),
        trust_user_code=trust_user_code,
    )
    try:
        result = stack.up(workers=workers, timeout_s=timeout)
    except StackError as error:
        errors.print(f"[red]rondo up failed:[/red] {escape(str(error))}", highlight=False)
        raise typer.Exit(1) from error
    profile = None
    if login:
        state = result.state
        profile = save_profile(Profile(url=state.gateway_url, api_key=state.user.api_key))
    _print_up(result, profile)


def _print_up(result: UpResult, profile: Path | None) -> None:
    state = result.state
    if result.already_running:
        console.print(f"[green]Rondo is already up[/green] in {state.data_dir}")
    else:
        console.print(f"[green]Rondo is up[/green] in {result.elapsed_s:.1f} s ({state.data_dir})")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("API / dashboard", state.gateway_url)
    table.add_row("API key", state.user.api_key)
    table.add_row("S3 endpoint", state.s3_endpoint)
    table.add_row("Bucket", state.user.bucket)
    if state.s3_user is not None:
        table.add_row("S3 access key id", state.s3_user.access_key)
        table.add_row("S3 secret key", state.s3_user.secret_key)
    table.add_row("Workers", ", ".join(a.agent_id for a in state.agents) or "none")
    if state.agents:
        table.add_row("User code", user_code_mode(state))
    table.add_row("Logs", str(state.logs_dir))
    if profile is not None:
        table.add_row("CLI profile", str(profile))
    console.print(table)


def user_code_mode(state: StackState) -> str:
    """How the workers run jobs' code: sandboxed uids, trusted, or not at all."""
    if state.trust_user_code:
        return "[yellow]trusted[/yellow]: runs as the workers' own user, unsandboxed"
    if can_switch_users():
        ranges = ", ".join(
            f"{a.agent_id} {a.sandbox_uids_env}" for a in state.agents if a.sandbox_uids
        )
        mode = f"sandboxed: a separate uid per process ({ranges})"
        closed = closed_folders(state.data_dir, Path(sys.executable))
        if closed:
            names = ", ".join(str(folder) for folder in closed)
            mode += (
                f"\n[red]but other users cannot pass through {escape(names)}[/red]: every job "
                "will fail until you `chmod o+x` them (or move the data dir / interpreter)"
            )
        return mode
    return (
        "[red]refused[/red]: workers cannot switch users (not root); every job will fail. "
        "Run as root, or pass --trust-user-code if you trust every job"
    )


@main.command()
def down(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Stop every process of the local stack (whole process trees, NVFlare included)."""
    result = LocalStack(data_dir).down()
    if not result.stopped and not result.strays:
        console.print("Nothing was running.")
    else:
        console.print(f"Stopped: {', '.join(result.stopped) or 'nothing recorded'}")
    if result.strays:
        console.print(f"Also stopped {len(result.strays)} stray process(es): {result.strays}")
    if result.ports_still_bound:
        errors.print(f"[red]Ports still bound:[/red] {result.ports_still_bound}")
        raise typer.Exit(1)


@main.command()
def status(
    job_id: Annotated[
        str | None, typer.Argument(help="A job: its state, workers and rounds.")
    ] = None,
    watch: Annotated[bool, typer.Option(help="With JOB: follow it live until it ends.")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable, with memory.")] = False,
) -> None:
    """Health of every part of the local stack (exits 0 only when all are healthy); with JOB,
    that job's status instead."""
    if job_id is not None:
        commands_jobs.show_status(job_id, watch, as_json)
        return
    report = LocalStack(data_dir).status()
    if as_json:
        print(report.model_dump_json(indent=2))
    elif not report.parts:
        console.print(f"No stack is running in {report.data_dir} (start one: rondo up).")
    else:
        _print_status(report)
    raise typer.Exit(0 if report.healthy else 1)


def _print_status(report: StackStatus) -> None:
    table = Table(title=f"Rondo stack in {report.data_dir}")
    table.add_column("part")
    table.add_column("pid", justify="right")
    table.add_column("health")
    table.add_column("memory", justify="right")
    table.add_column("detail", overflow="fold")
    for part in report.parts:
        health = "[green]healthy[/green]" if part.healthy else "[red]unhealthy[/red]"
        row = (part.name, str(part.pid), health, _mib(part.rss_bytes), escape(part.detail))
        table.add_row(*row)
    table.add_section()
    overall = "[green]all healthy[/green]" if report.healthy else "[red]not healthy[/red]"
    table.add_row("total", "", overall, _mib(report.rss_bytes), "")
    console.print(table)


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


@main.command()
def trace(
    job_id: Annotated[str, typer.Argument(help="The job whose traces to print.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Print the span trees of a job's traces, from <data-dir>/spans/*.jsonl."""
    traces = job_traces(read_spans(data_dir / "spans"), job_id)
    if not traces:
        errors.print(f"No span of job {job_id} in {data_dir / 'spans'}.")
        raise typer.Exit(1)
    for found in traces:
        tree = Tree(f"[bold]trace {found.trace_id}[/bold] ({found.span_count} spans)")
        for root in found.roots:
            _add_span(tree, root, found.start_ns)
        console.print(tree)


def _add_span(parent: Tree, node: SpanNode, trace_start_ns: int) -> None:
    span = node.span
    took = "unfinished" if span.duration_ms is None else f"{span.duration_ms:.1f} ms"
    offset = (span.start_ns - trace_start_ns) / 1e6
    style = "red" if span.status == "ERROR" else "default"
    label = (
        f"[{style}]{escape(span.name)}[/{style}] [dim]{escape(span.service or '?')}[/dim] "
        f"{took} [dim]@+{offset:.1f} ms[/dim]"
    )
    branch = parent.add(label)
    for child in node.children:
        _add_span(branch, child, trace_start_ns)


@main.command("env")
def env_(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Print `export` lines for the local stack's default user (eval "$(rondo env)"):
    RONDO_URL, RONDO_API_KEY, RONDO_S3_ENDPOINT, RONDO_S3_ACCESS_KEY, RONDO_S3_SECRET_KEY,
    RONDO_BUCKET."""
    state = load_state(data_dir)
    if state is None or state.s3_user is None:
        errors.print(f"No stack in {data_dir} (start one: rondo up).")
        raise typer.Exit(1)
    variables = {
        "RONDO_URL": state.gateway_url,
        "RONDO_API_KEY": state.user.api_key,
        "RONDO_S3_ENDPOINT": state.s3_endpoint,
        "RONDO_S3_ACCESS_KEY": state.s3_user.access_key,
        "RONDO_S3_SECRET_KEY": state.s3_user.secret_key,
        "RONDO_BUCKET": state.user.bucket,
    }
    for name, value in variables.items():
        print(f"export {name}={shlex.quote(value)}")


@main.command()
def login(
    url: Annotated[str, typer.Option(help="The Rondo API, e.g. http://127.0.0.1:8000")],
    api_key: Annotated[str, typer.Option(help="Your API key.")],
) -> None:
    """Store the API URL and key for later commands (RONDO_URL / RONDO_API_KEY override)."""
    path = save_profile(Profile(url=url, api_key=api_key))
    console.print(f"Logged in to {url} (profile {path}).")
