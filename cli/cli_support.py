"""What every API command of the `rondo` CLI shares: the SDK client, error reporting with
exit codes, JSON output, and rich progress bars for transfers.

Exit codes: 0 success, 1 the job ended FAILED or CANCELLED (`--watch`), 2 a usage or
validation error, 3 a connection or authentication error.
"""

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import BaseModel
from pydantic_core import to_json
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from rondo.client import Client
from rondo.errors import (
    ApiError,
    ChecksumMismatch,
    ConnectionFailed,
    InvalidInput,
    NotLoggedIn,
    OutputsPending,
    RondoError,
)

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
errors = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class ExitCode(IntEnum):
    OK = 0
    JOB_UNSUCCESSFUL = 1  # FAILED or CANCELLED, for --watch
    INVALID = 2  # usage or validation error
    UNREACHABLE = 3  # connection or authentication error


class CliOptions:
    """Global options set by the root callback (`rondo --debug ...`)."""

    debug = False


def exit_code_for(error: RondoError) -> ExitCode:
    if isinstance(error, ApiError):
        if error.is_auth_error or error.is_server_error:
            return ExitCode.UNREACHABLE
        return ExitCode.INVALID
    if isinstance(error, ConnectionFailed | NotLoggedIn | ChecksumMismatch | OutputsPending):
        return ExitCode.UNREACHABLE
    if isinstance(error, InvalidInput):
        return ExitCode.INVALID
    return ExitCode.JOB_UNSUCCESSFUL


def report_error(error: RondoError) -> None:
    """The error's message, every problem when there are several, and the hint, on stderr
    (unwrapped, so a message can be copied or matched whole)."""
    errors.print(f"[red]error:[/red] {escape(error.message)}", highlight=False, soft_wrap=True)
    if len(error.problems) > 1:
        for problem in error.problems:
            errors.print(f"  - {escape(problem.message)}", highlight=False, soft_wrap=True)
    if error.hint:
        errors.print(f"[dim]hint:[/dim] {escape(error.hint)}", highlight=False, soft_wrap=True)


def cli_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Run a command, turning SDK errors into their message, hint and exit code (a traceback
    only with `--debug`)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except RondoError as error:
            if CliOptions.debug:
                errors.print_exception()
            report_error(error)
            raise typer.Exit(exit_code_for(error)) from None
        except KeyboardInterrupt:
            errors.print("interrupted")
            raise typer.Exit(130) from None

    return run


@contextmanager
def open_client() -> Iterator[Client]:
    """The SDK client of the stored login (RONDO_URL / RONDO_API_KEY override it)."""
    client = Client()
    try:
        yield client
    finally:
        client.close()


def print_json(value: BaseModel | list[Any] | dict[str, Any]) -> None:
    """Machine-readable output on stdout (plain print: no wrapping, no colour)."""
    print(to_json(value, indent=2).decode(), flush=True)


def print_json_line(value: BaseModel) -> None:
    """One compact JSON object a line, for streams (`--watch --json`, `logs -f --json`)."""
    print(to_json(value).decode(), flush=True)


class ProgressBars:
    """A `TransferListener` drawing one rich progress bar per file."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}
        self._totals: dict[str, int] = {}

    def started(self, label: str, total: int) -> None:
        self._totals[label] = total
        if label in self._tasks:
            self._progress.reset(self._tasks[label], total=total)
        else:
            self._tasks[label] = self._progress.add_task(label, total=total)

    def advanced(self, label: str, nbytes: int) -> None:
        self._progress.advance(self._tasks[label], nbytes)

    def finished(self, label: str) -> None:
        self._progress.update(self._tasks[label], completed=self._totals[label])


@contextmanager
def progress_bars() -> Iterator[ProgressBars]:
    """Per-file progress bars on stderr while the block runs (plain lines when not a TTY)."""
    progress = Progress(
        TextColumn("{task.description}", style="cyan"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=errors,
    )
    with progress:
        yield ProgressBars(progress)
