"""The benchmark's data: one synthetic shard per site (`data.pt`, seeded), as a folder for
plain NVFlare and as a Rondo shard ZIP (flat, `manifest.ndjson` at its root)."""

import io
import json
import zipfile
from pathlib import Path

import torch

SAMPLES_PER_SITE = 256
IN_FEATURES = 32  # model_def.IN_FEATURES
NUM_CLASSES = 10


def shard_files(slot: int, straggler_s: float | None = None) -> dict[str, bytes]:
    """The files of slot `slot`'s shard; `straggler_s` makes that site sleep every round."""
    generator = torch.Generator().manual_seed(slot)
    x = torch.randn(SAMPLES_PER_SITE, IN_FEATURES, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (SAMPLES_PER_SITE,), generator=generator)
    buffer = io.BytesIO()
    torch.save({"x": x, "y": y}, buffer)
    record = {"id": f"site-{slot}", "uri": "data.pt", "y": [0]}
    files = {"data.pt": buffer.getvalue(), "manifest.ndjson": (json.dumps(record) + "\n").encode()}
    if straggler_s is not None:
        files["sleep.txt"] = str(straggler_s).encode()
    return files


def write_site_folders(root: Path, sites: list[str], straggler_s: float | None = None) -> Path:
    """`root/<site>/` with each site's shard files (site n gets slot n's data)."""
    for slot, site in enumerate(sites):
        folder = root / site
        folder.mkdir(parents=True, exist_ok=True)
        files = shard_files(slot, straggler_s if slot == 0 else None)
        for name, content in files.items():
            (folder / name).write_bytes(content)
    return root


def shard_zip(slot: int, straggler_s: float | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in shard_files(slot, straggler_s).items():
            archive.writestr(name, content)
    return buffer.getvalue()
