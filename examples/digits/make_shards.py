"""Split scikit-learn's bundled 8x8 digits into Rondo shard ZIPs, one per worker.

Each ZIP holds PNG images under ``images/`` and a ``manifest.ndjson`` at its root, one JSON
object a line: ``{"id", "uri", "y", "meta"}``. Images are stratified by label across the
shards with a fixed seed, so the same call always writes the same bytes.

    python examples/digits/make_shards.py --workers 2 --out /tmp/digits-shards
"""

import argparse
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

SEED = 1234
MANIFEST_NAME = "manifest.ndjson"
# A fixed timestamp for every ZIP entry, so the archives are byte-for-byte reproducible.
ZIP_DATE_TIME = (2024, 1, 1, 0, 0, 0)
DIGITS_MAX_VALUE = 16.0


@dataclass(frozen=True)
class DigitImage:
    """One digit of the source set, ready to be written into a shard."""

    index: int
    label: int
    pixels: np.ndarray  # uint8, shape (8, 8), 0-255 grayscale

    @property
    def sample_id(self) -> str:
        return f"digit-{self.index:04d}"

    @property
    def uri(self) -> str:
        return f"images/{self.sample_id}.png"


def load_digit_images() -> list[DigitImage]:
    """The 1,797 digits of ``load_digits()``, rescaled from 0-16 to 0-255 grayscale."""
    digits = load_digits()
    scaled = np.rint(digits.images * (255.0 / DIGITS_MAX_VALUE)).clip(0, 255).astype(np.uint8)
    return [
        DigitImage(index=i, label=int(label), pixels=scaled[i])
        for i, label in enumerate(digits.target)
    ]


def stratified_split(labels: list[int], workers: int, seed: int = SEED) -> list[list[int]]:
    """Deal the indices of each label round-robin over the shards after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    shards: list[list[int]] = [[] for _ in range(workers)]
    offset = 0
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(members)
        for position, index in enumerate(members):
            # Rotating the start keeps shard sizes within one image of each other.
            shards[(position + offset) % workers].append(index)
        offset += len(members)
    return [sorted(shard) for shard in shards]


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode one uint8 grayscale array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def manifest_line(image: DigitImage) -> str:
    """The manifest record of one image, as a single JSON line."""
    record = {
        "id": image.sample_id,
        "uri": image.uri,
        "y": [image.label],
        "meta": {"source_index": image.index},
    }
    return json.dumps(record, sort_keys=True)


def _write_entry(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    """Add one file to the ZIP with a fixed timestamp."""
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def write_shard(path: Path, images: list[DigitImage]) -> Path:
    """Write one shard ZIP: the PNGs plus ``manifest.ndjson`` at the ZIP root."""
    with zipfile.ZipFile(path, "w") as archive:
        for image in images:
            _write_entry(archive, image.uri, png_bytes(image.pixels))
        manifest = "".join(manifest_line(image) + "\n" for image in images)
        _write_entry(archive, MANIFEST_NAME, manifest.encode("utf-8"))
    return path


def make_shards(workers: int, out_dir: str | Path, seed: int = SEED) -> list[Path]:
    """Write ``shard_0.zip`` .. ``shard_{workers-1}.zip`` into ``out_dir`` and return them."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = load_digit_images()
    splits = stratified_split([image.label for image in images], workers, seed)
    return [
        write_shard(out / f"shard_{n}.zip", [images[i] for i in indices])
        for n, indices in enumerate(splits)
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="number of shards (default 2)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the shard ZIPs")
    parser.add_argument("--seed", type=int, default=SEED, help=f"shuffle seed (default {SEED})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for path in make_shards(args.workers, args.out, args.seed):
        with zipfile.ZipFile(path) as archive:
            count = len(archive.namelist()) - 1
        print(f"{path}  ({count} images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
