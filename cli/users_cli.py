"""`rondo users add|list|add-key|revoke-key|rotate-s3-key`: the operator's user commands.

Each runs the gateway's operator command (`python -m rondo.gateway.manage`) as a subprocess (the
CLI never imports the gateway) with the gateway's settings: those of the local stack in
`--data-dir` when there is one, otherwise this shell's `RONDO_*` variables (on a deployment's
gateway host). Secrets are printed once; nothing here stores them.
"""

import json
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rondo.stack.processes import current_env
from rondo.stack.services import gateway_env, manage_argv
from rondo.stack.state import load_state

app = typer.Typer(
    name="users",
    help="Users, their API keys and S3 keys (operator commands).",
    no_args_is_help=True,
)
console = Console()

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir", "-d", help="A local stack's folder; without a stack there, RONDO_* vars."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]
Name = Annotated[str, typer.Argument(help="The user's name.")]
MANAGE_TIMEOUT_S = 120


def _manage(data_dir: Path, *args: str) -> Any:
    """Run one operator command with `--json`; its answer, or exit with its error."""
    state = load_state(data_dir)
    env = gateway_env(state) if state is not None else current_env()
    result = subprocess.run(
        [*manage_argv(), *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=MANAGE_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        typer.echo(result.stderr.strip() or f"exit code {result.returncode}", err=True)
        raise typer.Exit(result.returncode)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _show(answer: Any, as_json: bool, rows: list[tuple[str, str]], note: str = "") -> None:
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, escape(value))
    console.print(table)
    if note:
        console.print(f"[yellow]{note}[/yellow]")


SHOWN_ONCE = "Secrets are shown only now: hand them to the user."


@app.command("add")
def add(
    name: Name,
    bucket: Annotated[
        str | None,
        typer.Option(help="A new bucket, the user's alone (default rondo-<name>)."),
    ] = None,
    data_dir: DataDir = Path(".rondo"),
    as_json: AsJson = False,
) -> None:
    """Create a user, their bucket and S3 key; print the API key and S3 credentials once.

    Names are case-insensitive. The bucket must be new: the platform's, another user's, or one
    already in the store is refused; pass --bucket when rondo-<name> is taken."""
    created = _manage(data_dir, "create-user", name, *(["--bucket", bucket] if bucket else []))
    rows = [
        ("User", f"{created['name']} ({created['user_id']})"),
        ("API key", created["api_key"]),
        ("Bucket", created["bucket"]),
        ("S3 access key id", created["s3_access_key"]),
        ("S3 secret key", created["s3_secret_key"]),
    ]
    _show(created, as_json, rows, SHOWN_ONCE)


@app.command("list")
def list_users(data_dir: DataDir = Path(".rondo"), as_json: AsJson = False) -> None:
    """Every user: bucket, S3 access key id, API keys (prefixes only)."""
    users = _manage(data_dir, "list-users")
    if as_json:
        print(json.dumps(users, indent=2))
        return
    table = Table("user", "bucket", "S3 access key id", "API keys", "revoked")
    for user in users:
        active = [key["prefix"] for key in user["api_keys"] if key["revoked_at"] is None]
        revoked = len(user["api_keys"]) - len(active)
        row = (user["name"], user["bucket"], user["s3_access_key"] or "-", ", ".join(active))
        table.add_row(*(escape(cell) for cell in row), str(revoked))
    console.print(table)


@app.command("add-key")
def add_key(
    name: Name,
    dev: Annotated[bool, typer.Option("--dev", help="An rsk_dev_ key.")] = False,
    data_dir: DataDir = Path(".rondo"),
    as_json: AsJson = False,
) -> None:
    """Mint another API key for a user (printed once)."""
    minted = _manage(data_dir, "add-key", name, *(["--dev"] if dev else []))
    _show(minted, as_json, [("User", minted["name"]), ("API key", minted["api_key"])], SHOWN_ONCE)


@app.command("revoke-key")
def revoke_key(
    name: Name,
    key: Annotated[
        str | None, typer.Argument(help="The whole key, or its prefix from `rondo users list`.")
    ] = None,
    revoke_all: Annotated[bool, typer.Option("--all", help="Every key of the user.")] = False,
    data_dir: DataDir = Path(".rondo"),
    as_json: AsJson = False,
) -> None:
    """Revoke an API key (or all of a user's): requests with it get 401 at once."""
    selector = ["--all"] if revoke_all else ([key] if key else [])
    revoked = _manage(data_dir, "revoke-key", name, *selector)
    _show(revoked, as_json, [("User", revoked["name"]), ("Revoked", ", ".join(revoked["revoked"]))])


@app.command("rotate-s3-key")
def rotate_s3_key(name: Name, data_dir: DataDir = Path(".rondo"), as_json: AsJson = False) -> None:
    """Give a user a new S3 key and revoke the old one at once (its presigned URLs too)."""
    rotated = _manage(data_dir, "rotate-s3-key", name)
    rows = [
        ("User", f"{rotated['name']} (bucket {rotated['bucket']})"),
        ("S3 access key id", rotated["s3_access_key"]),
        ("S3 secret key", rotated["s3_secret_key"]),
        ("Revoked", rotated["revoked_access_key"] or "-"),
    ]
    _show(rotated, as_json, rows, SHOWN_ONCE)
