"""`rondo shards make`: split a folder of samples into N shard ZIPs the platform accepts.

The samples come from `DATA/manifest.ndjson` when there is one (its `uri`s relative to DATA),
otherwise from DATA's subfolders, one label each (`DATA/cat/1.png` is labelled `cat`). Each
shard ZIP holds its samples at their `uri` paths and its own `manifest.ndjson` at the root.
Samples are dealt out per label after a seeded shuffle, so every shard gets about the same
share of each label and the same input always gives the same shards.
"""

import json
import random
import shutil
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field, ValidationError

from rondo.contracts.job_checks import MANIFEST_NAME
from rondo.contracts.job_checks import ManifestRecord as Sample
from rondo.errors import InvalidInput

SHARD_NAME = "shard_{index}.zip"
DEFAULT_SEED = 1234
# One timestamp for every entry: the same samples always give byte-identical ZIPs, so a
# re-upload of unchanged shards is skipped.
ZIP_DATE_TIME = (2024, 1, 1, 0, 0, 0)


def is_url(sample: Sample) -> bool:
    """A sample fetched by the user's code, not a file packed into the shard."""
    return "://" in sample.uri


class Dataset(BaseModel):
    """Samples read from a DATA folder, with the folder their relative `uri`s start from."""

    root: Path
    samples: list[Sample]
    label_names: list[str] = Field(default_factory=list, description="Name of label id n")


class ShardSummary(BaseModel):
    """What one written shard holds."""

    path: Path
    samples: int
    size: int
    labels: dict[str, int] = Field(description="Samples per label name (or id)")


# --------------------------------------------------------------------------- reading


def read_dataset(root: Path) -> Dataset:
    """The samples under `root`; raises `InvalidInput` naming the first thing to fix."""
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a folder", "give the folder that holds your samples")
    manifest = root / MANIFEST_NAME
    dataset = _read_manifest(root, manifest) if manifest.is_file() else _read_label_folders(root)
    if not dataset.samples:
        raise InvalidInput(
            f"no sample found in {root}",
            f"put one subfolder per label with the files in it, or a {MANIFEST_NAME}",
        )
    _check_samples(dataset)
    return dataset


def _read_manifest(root: Path, manifest: Path) -> Dataset:
    samples = []
    with manifest.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                samples.append(Sample.model_validate_json(line))
            except ValidationError as error:
                problem = error.errors()[0]
                where = ".".join(str(part) for part in problem["loc"]) or "line"
                raise InvalidInput(
                    f"{manifest} line {number}: {where}: {problem['msg']}",
                    'each line must be a JSON object {"id": str, "uri": str, "y": [int, ...]}',
                ) from None
    return Dataset(root=root, samples=samples)


def _visible_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            yield path


def _read_label_folders(root: Path) -> Dataset:
    label_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if label_dirs and loose:
        raise InvalidInput(
            f"{root} mixes label subfolders with loose files ({', '.join(loose[:3])})",
            "move every file into the subfolder of its label, or remove the subfolders",
        )
    if not label_dirs:
        samples = [_sample(root, path, []) for path in _visible_files(root)]
        return Dataset(root=root, samples=samples)
    samples = [
        _sample(root, path, [label])
        for label, folder in enumerate(label_dirs)
        for path in _visible_files(folder)
    ]
    return Dataset(root=root, samples=samples, label_names=[d.name for d in label_dirs])


def _sample(root: Path, path: Path, labels: list[int]) -> Sample:
    uri = path.relative_to(root).as_posix()
    return Sample(id=str(PurePosixPath(uri).with_suffix("")), uri=uri, y=labels)


def _check_samples(dataset: Dataset) -> None:
    seen: set[str] = set()
    for sample in dataset.samples:
        if sample.id in seen:
            raise InvalidInput(
                f"sample id {sample.id!r} appears twice", "give every sample its own id"
            )
        seen.add(sample.id)
        if is_url(sample):
            continue
        uri = PurePosixPath(sample.uri)
        if uri.is_absolute() or ".." in uri.parts:
            raise InvalidInput(
                f"sample {sample.id}: uri {sample.uri} leaves the data folder",
                "use a path relative to the folder of manifest.ndjson, or a URL",
            )
        if not (dataset.root / uri).is_file():
            raise InvalidInput(
                f"sample {sample.id}: {dataset.root / uri} does not exist",
                "fix the uri in manifest.ndjson or add the file",
            )


# --------------------------------------------------------------------------- splitting


def stratified_split(
    samples: list[Sample], parts: int, seed: int = DEFAULT_SEED
) -> list[list[int]]:
    """Indices of `samples` for each of `parts` shards, dealt out label by label after a
    seeded shuffle; shard sizes differ by at most one."""
    by_label: defaultdict[tuple[int, ...], list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        by_label[tuple(sample.y)].append(index)
    rng = random.Random(seed)
    shards: list[list[int]] = [[] for _ in range(parts)]
    dealt = 0
    for label in sorted(by_label):
        members = by_label[label]
        rng.shuffle(members)
        for index in members:
            # Carrying the position over from the previous label keeps the sizes even.
            shards[dealt % parts].append(index)
            dealt += 1
    return [sorted(shard) for shard in shards]


# --------------------------------------------------------------------------- writing

# Raises `InvalidInput` for a shard the platform would refuse: (ZIP file, name for messages).
ShardCheck = Callable[[Path, str], None]


def make_shards(
    dataset: Dataset,
    parts: int,
    out_dir: Path,
    *,
    check: ShardCheck,
    seed: int = DEFAULT_SEED,
    replace: bool = False,
) -> list[ShardSummary]:
    """Write `shard_0.zip` .. `shard_{parts-1}.zip` into `out_dir`.

    Every ZIP is built in a temporary folder and passed to `check`; only when all pass are
    they moved
    into `out_dir`, so a refusal writes nothing. ZIPs already in `out_dir` make it refuse,
    unless `replace`, which removes them (a stale extra shard would become an extra worker).
    """
    if parts < 1:
        raise InvalidInput("--workers must be at least 1", "give one shard per worker")
    if parts > len(dataset.samples):
        raise InvalidInput(
            f"{len(dataset.samples)} sample(s) cannot fill {parts} shards",
            "lower --workers or add samples",
        )
    existing = sorted(out_dir.glob("*.zip")) if out_dir.is_dir() else []
    if existing and not replace:
        raise InvalidInput(
            f"{out_dir} already holds {len(existing)} ZIP(s), e.g. {existing[0].name}",
            "write into an empty folder, or pass --replace to remove them",
        )
    splits = stratified_split(dataset.samples, parts, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".shards-", dir=out_dir) as tmp:
        built = []
        for index, members in enumerate(splits):
            path = Path(tmp) / SHARD_NAME.format(index=index)
            _write_shard(path, dataset, [dataset.samples[i] for i in members])
            check(path, str(out_dir / path.name))
            built.append((path, members))
        for old in existing:
            old.unlink()
        return [_move(path, out_dir, dataset, members) for path, members in built]


def _write_shard(path: Path, dataset: Dataset, samples: list[Sample]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for sample in samples:
            if not is_url(sample):
                info = zipfile.ZipInfo(sample.uri, date_time=ZIP_DATE_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                with (dataset.root / sample.uri).open("rb") as src, archive.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst)
        manifest = "".join(_manifest_line(dataset, sample) + "\n" for sample in samples)
        info = zipfile.ZipInfo(MANIFEST_NAME, date_time=ZIP_DATE_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, manifest)


def _manifest_line(dataset: Dataset, sample: Sample) -> str:
    record = sample.model_dump()
    if dataset.label_names and sample.y:
        record["meta"] = {"label": dataset.label_names[sample.y[0]], **sample.meta}
    return json.dumps(record, sort_keys=True)


def _move(path: Path, out_dir: Path, dataset: Dataset, members: list[int]) -> ShardSummary:
    target = out_dir / path.name
    path.replace(target)
    counts: defaultdict[str, int] = defaultdict(int)
    for index in members:
        counts[_label_name(dataset, dataset.samples[index].y)] += 1
    return ShardSummary(
        path=target, samples=len(members), size=target.stat().st_size, labels=dict(counts)
    )


def _label_name(dataset: Dataset, labels: list[int]) -> str:
    if not labels:
        return "unlabelled"
    names = dataset.label_names
    return "+".join(names[y] if y < len(names) else str(y) for y in labels)
