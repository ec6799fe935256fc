"""Rondo demo job: a small CNN that classifies 8x8 grayscale digits (10 classes).

Rondo imports this file on every worker and once on the FL server; every import it needs is
at the top of this file. The worker's shard is a folder of PNG images with a
``manifest.ndjson`` at its root (``id``, ``uri``, ``y``, optional ``meta`` per line).

A deterministic ~20% of each shard (chosen by a hash of the sample id) is held out for
validation; the rest is trained on. Adam at the platform's default learning rate (0.001)
reaches over 90% validation accuracy within 5 rounds of 2 local epochs on 2 shards.
"""

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

NUM_CLASSES = 10
IMAGE_SIZE = 8
VALIDATION_FRACTION = 0.2
MANIFEST_NAME = "manifest.ndjson"
INIT_SEED = 0
DEFAULT_ENV: dict[str, Any] = {
    "DEVICE": "cpu",
    "local_epochs": 2,
    "batch_size": 32,
    "learning_rate": 0.001,
    "CURRENT_ROUND": 0,
    "SITE_NAME": "local",
}

Logger = Callable[[Any], None] | None


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, one 2x2 max-pool and two linear layers (~38k parameters)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(32 * (IMAGE_SIZE // 2) ** 2, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch of shape (N, 1, 8, 8) with values in [0, 1] to class logits (N, 10)."""
        x = (x - 0.5) / 0.5  # centre the pixels on zero: Adam converges faster
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ShardData:
    """A shard split into its training and held-out validation tensors."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor


# Shards are read once per process: the worker calls fl_train_model every round.
_SHARD_CACHE: dict[str, ShardData] = {}


def read_manifest(data_root: Path) -> list[dict[str, Any]]:
    """The manifest records of an unpacked shard (those with at least one label)."""
    path = data_root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{MANIFEST_NAME} not found at the shard root {data_root}")
    records = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                if record.get("y"):
                    records.append(record)
    return records


def is_validation(sample_id: str) -> bool:
    """Deterministically put ~VALIDATION_FRACTION of the ids into the validation split."""
    bucket = int(hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:8], 16) % 100
    return bucket < VALIDATION_FRACTION * 100


def load_image(data_root: Path, uri: str) -> np.ndarray:
    """One PNG as a float32 (8, 8) array in [0, 1]."""
    if "://" in uri:
        raise ValueError(f"this example reads local images only, got {uri!r}")
    with Image.open(data_root / uri) as image:
        gray = image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE))
        return np.asarray(gray, dtype=np.float32) / 255.0


def to_tensors(data_root: Path, records: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the images and first labels of some records into (N, 1, 8, 8) and (N,) tensors."""
    if not records:
        empty = torch.empty(0, 1, IMAGE_SIZE, IMAGE_SIZE)
        return empty, torch.empty(0, dtype=torch.long)
    images = np.stack([load_image(data_root, record["uri"]) for record in records])
    labels = [int(record["y"][0]) for record in records]
    return torch.from_numpy(images).unsqueeze(1), torch.tensor(labels, dtype=torch.long)


def load_shard(data_root: str | Path) -> ShardData:
    """Read (once per process) and split an unpacked shard."""
    root = Path(data_root).resolve()
    key = str(root)
    if key not in _SHARD_CACHE:
        records = read_manifest(root)
        val = [r for r in records if is_validation(str(r["id"]))]
        train = [r for r in records if not is_validation(str(r["id"]))]
        _SHARD_CACHE[key] = ShardData(*to_tensors(root, train), *to_tensors(root, val))
    return _SHARD_CACHE[key]


# --------------------------------------------------------------------------- model helpers


def build_model(weights: Mapping[str, torch.Tensor] | None = None) -> DigitsCNN:
    """A model seeded deterministically, then loaded with ``weights`` when given."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = DigitsCNN()
    if weights:
        model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    return model


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's weights."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def resolve_env(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload's env over the platform defaults."""
    return {**DEFAULT_ENV, **(payload.get("env") or {})}


def log(logger: Logger, message: str) -> None:
    """Send a line to the worker's log if a logger was given."""
    if logger is not None:
        logger(message)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ShardData,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> float:
    """One pass over the training split in shuffled mini-batches; returns the mean loss."""
    model.train()
    order = torch.randperm(len(data.train_y), generator=generator)
    total_loss = 0.0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        x, y = data.train_x[batch].to(device), data.train_y[batch].to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(batch)
    return total_loss / max(len(order), 1)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> dict[str, float]:
    """Cross-entropy loss and accuracy of the model on (x, y)."""
    if len(y) == 0:
        return {"loss": 0.0, "accuracy": 0.0}
    model.eval()
    logits = model(x.to(device))
    y = y.to(device)
    return {
        "loss": F.cross_entropy(logits, y).item(),
        "accuracy": (logits.argmax(dim=1) == y).float().mean().item(),
    }


def write_summary(out_dir: str | Path, summary: dict[str, Any]) -> None:
    """Write ``round_summary.json`` into the round's out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "round_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")


# --------------------------------------------------------------------------- Rondo contract


def fl_train_model(
    payload: Mapping[str, Any], out_dir: str | Path, logger: Logger = None
) -> dict[str, Any]:
    """Train the global weights on this worker's shard for ``local_epochs`` epochs.

    Returns the new weights (CPU tensors), the number of training samples (FedAvg's weight)
    and ``{"loss": last-epoch training loss, "accuracy": held-out validation accuracy}``.
    """
    started = time.perf_counter()
    env = resolve_env(payload)
    device = torch.device(env["DEVICE"])
    data = load_shard(payload["dataset"]["data_root"])
    model = build_model(payload.get("initial_weights")).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(env["learning_rate"]))
    generator = torch.Generator().manual_seed(int(env["CURRENT_ROUND"]))

    train_loss = 0.0
    for epoch in range(int(env["local_epochs"])):
        train_loss = train_epoch(model, optimizer, data, int(env["batch_size"]), generator, device)
        val = evaluate(model, data.val_x, data.val_y, device)
        log(
            logger,
            f"round {env['CURRENT_ROUND']} epoch {epoch + 1}/{env['local_epochs']}: "
            f"train_loss={train_loss:.4f} val_loss={val['loss']:.4f} "
            f"val_accuracy={val['accuracy']:.4f}",
        )

    val = evaluate(model, data.val_x, data.val_y, device)
    metrics = {"loss": train_loss, "accuracy": val["accuracy"]}
    write_summary(
        out_dir,
        {
            "site": env["SITE_NAME"],
            "round": env["CURRENT_ROUND"],
            "epochs": env["local_epochs"],
            "train_samples": len(data.train_y),
            "val_samples": len(data.val_y),
            "val_loss": val["loss"],
            **metrics,
            "seconds": round(time.perf_counter() - started, 4),
        },
    )
    return {"weights": cpu_state_dict(model), "samples": len(data.train_y), "metrics": metrics}


def fl_validate_model(
    payload: Mapping[str, Any], out_dir: str | Path, logger: Logger = None
) -> dict[str, Any]:
    """Evaluate ``payload["initial_weights"]`` on this worker's held-out split."""
    env = resolve_env(payload)
    device = torch.device(env["DEVICE"])
    data = load_shard(payload["dataset"]["data_root"])
    model = build_model(payload.get("initial_weights")).to(device)
    metrics = evaluate(model, data.val_x, data.val_y, device)
    log(
        logger,
        f"validation: loss={metrics['loss']:.4f} accuracy={metrics['accuracy']:.4f} "
        f"on {len(data.val_y)} samples",
    )
    return {"metrics": metrics, "samples": len(data.val_y)}
