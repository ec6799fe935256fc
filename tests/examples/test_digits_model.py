"""The digits demo job, locally: shard format, a simulated FedAvg run, checkpoint format.

No platform is involved: ``fl_train_model`` is called in-process on each unpacked shard and the
weights are averaged by ``samples``, as Rondo's FedAvg does.
"""

import json
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

WORKERS = 2
ROUNDS = 5
TOTAL_DIGITS = 1797
StateDict = dict[str, torch.Tensor]


@dataclass
class FedAvgRun:
    """What the simulated federation produced."""

    global_weights: StateDict
    round_metrics: list[list[dict[str, Any]]]  # per round, per worker
    val_accuracy: float  # samples-weighted, of the final global model
    seconds_per_round: list[float]
    log_lines: list[Any]
    out_dirs: list[Path]


@pytest.fixture(scope="module")
def shard_zips(
    make_shards_module: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    return make_shards_module.make_shards(WORKERS, tmp_path_factory.mktemp("digits-shards"))


@pytest.fixture(scope="module")
def data_roots(shard_zips: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Each shard unpacked flat into its own folder, as a worker's data root."""
    roots = []
    for shard in shard_zips:
        root = tmp_path_factory.mktemp(shard.stem)
        with zipfile.ZipFile(shard) as archive:
            archive.extractall(root)
        roots.append(root)
    return roots


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Train on one CPU thread, as a worker does by default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def payload(root: Path, weights: StateDict, round_index: int, site: str) -> dict[str, Any]:
    """The payload Rondo passes to fl_train_model, with the platform's defaults."""
    return {
        "dataset": {"data_root": str(root)},
        "initial_weights": weights,
        "env": {
            "SITE_NAME": site,
            "JOB_ID": "test-job",
            "CURRENT_ROUND": round_index,
            "NUM_ROUNDS": ROUNDS,
            "DEVICE": "cpu",
            "local_epochs": 2,
            "batch_size": 32,
            "learning_rate": 0.001,
        },
    }


def fedavg(results: list[dict[str, Any]]) -> StateDict:
    """Average the workers' weights, each weighted by its ``samples``."""
    total = sum(result["samples"] for result in results)
    keys = results[0]["weights"].keys()
    return {
        key: sum(result["weights"][key] * (result["samples"] / total) for result in results)
        for key in keys
    }


def validate(model_def: ModuleType, roots: list[Path], weights: StateDict, out: Path) -> float:
    """Samples-weighted validation accuracy of ``weights`` over every shard's held-out split."""
    results = [
        model_def.fl_validate_model(
            {"dataset": {"data_root": str(root)}, "initial_weights": weights}, out
        )
        for root in roots
    ]
    total = sum(result["samples"] for result in results)
    return sum(result["metrics"]["accuracy"] * result["samples"] for result in results) / total


@pytest.fixture(scope="module")
def fedavg_run(
    model_def: ModuleType,
    data_roots: list[Path],
    one_thread: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> FedAvgRun:
    """Five FedAvg rounds over the two shards, starting from the server's fresh model."""
    out_root = tmp_path_factory.mktemp("digits-out")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the server builds the model with no arguments; seeded to repeat
        weights = {k: v.clone() for k, v in model_def.DigitsCNN().state_dict().items()}
    log_lines: list[Any] = []
    round_metrics, seconds, out_dirs = [], [], []
    for round_index in range(ROUNDS):
        started = time.perf_counter()
        results = []
        for slot, root in enumerate(data_roots):
            out_dir = out_root / f"client_{slot}" / f"round_{round_index}"
            out_dir.mkdir(parents=True)
            out_dirs.append(out_dir)
            site_payload = payload(root, weights, round_index, f"site-{slot}-0")
            results.append(model_def.fl_train_model(site_payload, out_dir, log_lines.append))
        weights = fedavg(results)
        seconds.append((time.perf_counter() - started) / len(data_roots))
        round_metrics.append(
            [result["metrics"] | {"samples": result["samples"]} for result in results]
        )
        for result in results:
            assert all(tensor.device.type == "cpu" for tensor in result["weights"].values())
    accuracy = validate(model_def, data_roots, weights, out_root / "validate")
    return FedAvgRun(weights, round_metrics, accuracy, seconds, log_lines, out_dirs)


# --------------------------------------------------------------------------- shards


def manifest_records(archive: zipfile.ZipFile) -> list[dict[str, Any]]:
    lines = archive.read("manifest.ndjson").decode("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_each_shard_has_a_valid_manifest_at_its_root(shard_zips: list[Path]) -> None:
    assert [path.name for path in shard_zips] == [f"shard_{n}.zip" for n in range(WORKERS)]
    all_ids: list[str] = []
    for shard in shard_zips:
        with zipfile.ZipFile(shard) as archive:
            names = set(archive.namelist())
            assert "manifest.ndjson" in names
            records = manifest_records(archive)
            assert len(records) == len(names) - 1
            for record in records:
                assert isinstance(record["id"], str) and record["id"]
                uri = record["uri"]
                assert isinstance(uri, str) and not PurePosixPath(uri).is_absolute()
                assert ".." not in PurePosixPath(uri).parts
                assert uri in names
                labels = record["y"]
                assert isinstance(labels, list) and len(labels) == 1
                assert all(isinstance(y, int) and 0 <= y < 10 for y in labels)
                assert isinstance(record.get("meta", {}), dict)
            assert {record["y"][0] for record in records} == set(range(10))
            all_ids += [record["id"] for record in records]
    assert len(all_ids) == len(set(all_ids)) == TOTAL_DIGITS


def test_shards_are_stratified_and_reproducible(
    make_shards_module: ModuleType, shard_zips: list[Path], tmp_path: Path
) -> None:
    again = make_shards_module.make_shards(WORKERS, tmp_path)
    for first, second in zip(shard_zips, again, strict=True):
        assert first.read_bytes() == second.read_bytes()
    counts = []
    for shard in shard_zips:
        with zipfile.ZipFile(shard) as archive:
            labels = [record["y"][0] for record in manifest_records(archive)]
        counts.append([labels.count(digit) for digit in range(10)])
    for digit in range(10):
        assert abs(counts[0][digit] - counts[1][digit]) <= 1


def test_pngs_are_8x8_grayscale_scaled_to_255(
    shard_zips: list[Path], data_roots: list[Path]
) -> None:
    from PIL import Image

    with zipfile.ZipFile(shard_zips[0]) as archive:
        records = manifest_records(archive)
    brightest = 0
    for record in records[:50]:
        with Image.open(data_roots[0] / record["uri"]) as image:
            assert image.size == (8, 8) and image.mode == "L"
            brightest = max(brightest, int(np.asarray(image).max()))
    assert brightest == 255


def test_cli_writes_the_shards(make_shards_module: ModuleType, tmp_path: Path) -> None:
    assert make_shards_module.main(["--workers", "3", "--out", str(tmp_path)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "shard_0.zip",
        "shard_1.zip",
        "shard_2.zip",
    ]


# --------------------------------------------------------------------------- training


def test_fedavg_reaches_90_percent_in_five_rounds(fedavg_run: FedAvgRun) -> None:
    assert fedavg_run.val_accuracy > 0.90
    last_round = fedavg_run.round_metrics[-1]
    assert all(metrics["accuracy"] > 0.85 for metrics in last_round)
    first_loss = fedavg_run.round_metrics[0][0]["loss"]
    assert last_round[0]["loss"] < first_loss


def test_a_round_is_fast_on_one_cpu_thread(fedavg_run: FedAvgRun) -> None:
    # Round 0 pays one-time costs (the PNGs are read, torch.optim imports torch._dynamo).
    steady = fedavg_run.seconds_per_round[1:]
    assert max(steady) < 1.0, steady


def test_train_returns_the_contract_and_writes_a_summary(fedavg_run: FedAvgRun) -> None:
    for metrics in fedavg_run.round_metrics[0]:
        assert set(metrics) == {"loss", "accuracy", "samples"}
        assert 600 < metrics["samples"] < 800
    for out_dir in fedavg_run.out_dirs:
        summary = json.loads((out_dir / "round_summary.json").read_text())
        assert {"round", "loss", "accuracy", "train_samples", "val_samples"} <= set(summary)
    # One log line per local epoch per call.
    assert len(fedavg_run.log_lines) == ROUNDS * WORKERS * 2
    assert all(isinstance(line, str) and "epoch" in line for line in fedavg_run.log_lines)


def test_train_starts_without_initial_weights(
    model_def: ModuleType, data_roots: list[Path], one_thread: None, tmp_path: Path
) -> None:
    result = model_def.fl_train_model(
        {"dataset": {"data_root": str(data_roots[0])}, "initial_weights": {}, "env": {}}, tmp_path
    )
    assert result["samples"] > 0 and set(result["metrics"]) == {"loss", "accuracy"}


def test_checkpoint_loads_into_a_fresh_model(
    model_def: ModuleType, fedavg_run: FedAvgRun, data_roots: list[Path], tmp_path: Path
) -> None:
    path = tmp_path / "global_model.pt"
    torch.save(fedavg_run.global_weights, path)
    model = model_def.DigitsCNN()
    model.load_state_dict(torch.load(path))
    reloaded = validate(model_def, data_roots, model.state_dict(), tmp_path)
    assert reloaded == pytest.approx(fedavg_run.val_accuracy)
