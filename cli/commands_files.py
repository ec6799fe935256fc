"""`rondo files ls|cat|get|put|rm`: your bucket, through the API's presigned URLs."""

from pathlib import Path, PurePosixPath
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from rondo.cli_support import (
    JsonOption,
    cli_errors,
    console,
    open_client,
    print_json,
    progress_bars,
)
from rondo.contracts.api import FileListing

app = typer.Typer(
    name="files", help="Browse, read, fetch and upload files in your bucket.", no_args_is_help=True
)

Key = Annotated[str, typer.Argument(help="Object key in your bucket, e.g. jobs/x/files_out/.")]


@app.command("ls")
@cli_errors
def list_files(
    prefix: Annotated[str, typer.Argument(help="Folder to list (ends with /).")] = "",
    as_json: JsonOption = False,
) -> None:
    """The folders and files directly under PREFIX."""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    with open_client() as client:
        listing = client.files.ls(prefix)
    if as_json:
        print_json(listing)
    else:
        console.print(_listing_table(listing))


def _listing_table(listing: FileListing) -> Table:
    table = Table(title=listing.prefix or "/", title_justify="left", box=None)
    table.add_column("size", justify="right")
    table.add_column("modified")
    table.add_column("name")
    for folder in listing.folders:
        name = folder.removeprefix(listing.prefix)
        table.add_row("", "", f"[bold blue]{escape(name)}[/bold blue]")
    for obj in listing.objects:
        modified = obj.last_modified.astimezone().strftime("%Y-%m-%d %H:%M")
        table.add_row(_size(obj.size), modified, escape(obj.key.removeprefix(listing.prefix)))
    return table


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@app.command("cat")
@cli_errors
def cat(
    key: Key,
    max_bytes: Annotated[int | None, typer.Option(help="Read at most this much.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Print a text file (logs, metrics.json, ...)."""
    with open_client() as client:
        text = client.files.text(key, max_bytes)
    if as_json:
        print_json(text)
        return
    print(text.text, end="" if text.text.endswith("\n") else "\n")
    if text.truncated:
        console.print(
            f"[dim](first {len(text.text.encode())} of {text.size} bytes; "
            f"rondo files get {escape(key)} fetches it all)[/dim]"
        )


@app.command("get")
@cli_errors
def get(
    key: Key,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File or folder to write (default: current folder)."),
    ] = None,
) -> None:
    """Download a file, verified against its checksum."""
    name = PurePosixPath(key).name
    target = output or Path(name)
    if target.is_dir():
        target = target / name
    with open_client() as client, progress_bars() as bars:
        client.files.download(key, target, bars)
    console.print(f"saved {target}")


@app.command("put")
@cli_errors
def put(
    local: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="File to upload.")],
    key: Annotated[
        str | None, typer.Argument(help="Key to write (ending in / : a folder). Default: its name.")
    ] = None,
) -> None:
    """Upload a file (multipart when large) to your bucket."""
    target = key or local.name
    if target.endswith("/"):
        target += local.name
    with open_client() as client, progress_bars() as bars:
        client.files.upload(local, target, bars)
    console.print(f"uploaded {escape(target)}")


@app.command("rm")
@cli_errors
def remove(key: Key) -> None:
    """Delete a file from your bucket."""
    with open_client() as client:
        client.files.delete(key)
    console.print(f"deleted {escape(key)}")
