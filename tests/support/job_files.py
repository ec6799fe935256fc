"""Job files that pass (or, changed, fail) the platform's checks: shard ZIPs, manifest lines,
model_def.py sources."""

import io
import json
import stat
import zipfile

MANIFEST = "manifest.ndjson"


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """A DEFLATE-compressed ZIP of `entries` (name -> content), in their order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def symlink_entry(name: str) -> zipfile.ZipInfo:
    """A ZIP entry marked as a Unix symbolic link (write the link target as its content)."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the mode bits below count
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def manifest_line(sample_id: str, uri: str, labels: tuple[int, ...] = (0,)) -> bytes:
    return json.dumps({"id": sample_id, "uri": uri, "y": list(labels)}).encode() + b"\n"


def shard(*sample_ids: str, folder: str = "") -> bytes:
    """A shard of one-byte text samples, its manifest at the root (or inside `folder`)."""
    files = {f"{folder}{i}.txt": i.encode() for i in sample_ids}
    manifest = b"".join(manifest_line(i, f"{i}.txt") for i in sample_ids)
    return zip_bytes({f"{folder}{MANIFEST}": manifest, **files})


MODEL_HEAD = b'''"""A one-layer model; fl_train_model below is what each test changes."""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)

'''


def model_def(train_body: bytes) -> bytes:
    """model_def.py whose fl_train_model runs `train_body` (indented 4), then returns
    the model's weights."""
    return (
        MODEL_HEAD
        + b"\ndef fl_train_model(payload, out_dir, logger=None):\n"
        + train_body
        + b'    return {"weights": Net().state_dict(), "samples": 1, "metrics": {"loss": 1.0}}\n'
    )
