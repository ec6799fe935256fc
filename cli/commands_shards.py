"""`rondo shards make`: one shard ZIP per worker from a folder of samples."""

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from rondo.cli_support import JsonOption, cli_errors, console, print_json
from rondo.local_checks import check_shard
from rondo.shards import DEFAULT_SEED, MANIFEST_NAME, make_shards, read_dataset

app = typer.Typer(name="shards", help="Make shard ZIPs from your data.", no_args_is_help=True)


@app.command("make")
@cli_errors
def make(
    data: Annotated[
        Path,
        typer.Argument(
            help=f"Folder of samples: one subfolder per label, or a {MANIFEST_NAME} whose uris "
            "are relative to it."
        ),
    ],
    workers: Annotated[int, typer.Option("--workers", "-n", min=1, help="Shards to write.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for shard_<n>.zip.")],
    seed: Annotated[int, typer.Option(help="Shuffle seed (same seed, same shards).")] = (
        DEFAULT_SEED
    ),
    replace: Annotated[
        bool, typer.Option(help="Remove ZIPs already in --out (else it refuses).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Split DATA into N shard ZIPs, stratified by label, each with manifest.ndjson at its
    root. Writes nothing when a shard would be refused by the platform."""
    dataset = read_dataset(data)
    summaries = make_shards(dataset, workers, out, check=check_shard, seed=seed, replace=replace)
    if as_json:
        print_json(summaries)
        return
    table = Table(title=f"{len(dataset.samples)} samples into {workers} shard(s) in {out}")
    table.add_column("shard")
    table.add_column("samples", justify="right")
    table.add_column("size", justify="right")
    table.add_column("samples per label", overflow="fold")
    for summary in summaries:
        size = f"{summary.size / 2**20:.2f} MiB"
        per_label = "  ".join(f"{escape(label)}: {n}" for label, n in summary.labels.items())
        table.add_row(summary.path.name, str(summary.samples), size, per_label)
    console.print(table)
