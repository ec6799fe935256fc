"""Pure parts of the artifacts service: key layout, best-round rule, reports, the SQL store."""

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.databases import migrated_engine

from rondo.artifacts.layout import JobLocation, UnsafePath, check_staged_path
from rondo.artifacts.logs import render_log_file, separator_line
from rondo.artifacts.metrics_report import (
    best_round,
    render_metrics_json,
    render_training_log,
)
from rondo.artifacts.migrations import MIGRATIONS
from rondo.artifacts.models import ModelPointers, RoundRecord
from rondo.artifacts.store import JobNotKnown, SqlArtifactsStore, make_store
from rondo.contracts.events import WorkerContribution


def record(round_number: int, run_id: str = "run-a", **metrics: float) -> RoundRecord:
    return RoundRecord(
        job_id="job-1",
        round=round_number,
        run_id=run_id,
        event_id=f"e-{run_id}-{round_number}",
        num_rounds=5,
        metrics=metrics,
        contributions=[WorkerContribution(site_name="site-0-0", slot=0, samples=10)],
        duration_s=2.0,
        completed_at=datetime(2025, 1, 1, 12, 0, round_number, tzinfo=UTC),
        checkpoint_sha256=f"{round_number:064d}",
    )


def test_exact_output_keys() -> None:
    location = JobLocation("j", "bucket", "jobs/digits/")
    assert location.metrics_json == "jobs/digits/files_out/metrics.json"
    assert location.training_log == "jobs/digits/files_out/training_log.txt"
    assert location.rounds_json == "jobs/digits/files_out/fl_round_complete.json"
    assert location.log_file("server.log") == "jobs/digits/files_out/server.log"
    assert location.log_file("client_3.log") == "jobs/digits/files_out/client_3.log"
    assert location.global_model == "jobs/digits/model_out/global_model.pt"
    assert location.best_model == "jobs/digits/model_out/best_model.pt"
    assert location.model_round(4) == "jobs/digits/model_out/model_round_4.pt"


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/files_out/x",
        "files_out",
        "files_out/",
        "files_out//x",
        "files_out/./x",
        "files_out/a/../../x",
        "files_out\\..\\x",
        "files_out/a\nb",
        "model_out/x.pt",
        "scripts/model_def.py",
        "files_out/metrics.json",
        "files_out/client_0.log",
    ],
)
def test_unsafe_staged_paths_are_refused(path: str) -> None:
    with pytest.raises(UnsafePath):
        check_staged_path(path)


def test_safe_staged_path() -> None:
    assert (
        check_staged_path("files_out/client_0/round_1/a.png") == "files_out/client_0/round_1/a.png"
    )
    assert check_staged_path("files_out/client_0/metrics.json") == "files_out/client_0/metrics.json"


def best_of(*rounds: RoundRecord) -> int | None:
    best = best_round(rounds)
    return best.round if best else None


def test_best_round_rule() -> None:
    # Lowest loss wins when any round reports loss.
    assert best_of(record(0, loss=0.9, accuracy=0.9), record(1, loss=0.3, accuracy=0.5)) == 1
    # Otherwise the highest accuracy, then miou, then the first metric.
    assert best_of(record(0, accuracy=0.7), record(1, accuracy=0.6)) == 0
    assert best_of(record(0, miou=0.1, f1=0.9), record(1, miou=0.2, f1=0.1)) == 1
    assert best_of(record(0, f1=0.1), record(1, f1=0.4)) == 1
    # NaN never wins; ties go to the earlier round; no metrics: the latest round.
    assert best_of(record(0, loss=math.nan), record(1, loss=2.0)) == 1
    assert best_of(record(0, loss=1.0), record(1, loss=1.0)) == 0
    assert best_of(record(0), record(1)) == 1
    assert best_of() is None


def test_metrics_json_shape() -> None:
    document = json.loads(
        render_metrics_json([record(1, loss=0.2, miou=0.8), record(0, loss=math.nan, miou=0.1)])
    )
    assert [r["round"] for r in document["rounds"]] == [0, 1]
    assert document["rounds"][0]["loss"] is None  # NaN is not JSON
    assert document["rounds"][1] == {
        "round": 1,
        "loss": 0.2,
        "metrics": {"miou": 0.8},
        "samples": {"client_0": 10},
        "duration_s": 2.0,
        "completed_at": "2025-01-01T12:00:01+00:00",
        "run_id": "run-a",
    }
    assert document["best_round"] == 1
    assert document["best_miou"] == 0.8
    assert document["best_loss"] == 0.2


def test_training_log_has_one_line_per_round() -> None:
    text = render_training_log([record(1, loss=0.25, accuracy=0.5), record(0, loss=0.5)]).decode()
    assert text.splitlines() == [
        "2025-01-01T12:00:00+00:00 round 0/5 loss=0.5 samples=10 duration=2.0s",
        "2025-01-01T12:00:01+00:00 round 1/5 loss=0.25 accuracy=0.5 samples=10 duration=2.0s",
    ]


@pytest.fixture
def store(database_url: str) -> Iterator[SqlArtifactsStore]:
    """A store on the module's database (SQLite, then PostgreSQL) that knows job-1."""
    with migrated_engine(database_url, MIGRATIONS) as engine:
        made = SqlArtifactsStore(engine)
        made.save_location(JobLocation("job-1", "bucket", "jobs/digits"))
        yield made


def test_sqlite_pragmas(tmp_path: Path) -> None:
    store = make_store(f"sqlite:///{tmp_path / 'db' / 'artifacts.db'}")
    assert isinstance(store, SqlArtifactsStore)
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_store_rounds_last_writer_wins(store: SqlArtifactsStore) -> None:
    assert store.location("job-1").prefix == "jobs/digits/"
    with pytest.raises(JobNotKnown):
        store.location("nope")
    store.save_round(record(0, loss=1.0))
    store.save_round(record(1, loss=0.5))
    store.save_round(record(1, loss=0.5))
    store.save_round(record(1, run_id="run-b", loss=0.4))
    rounds = store.rounds("job-1")
    assert [(r.round, r.run_id) for r in rounds] == [(0, "run-a"), (1, "run-b")]
    assert rounds[1].completed_at.tzinfo is not None
    store.set_model_pointers("job-1", ModelPointers(global_round=1, global_sha256="x"))
    assert store.model_pointers("job-1").global_round == 1


def test_store_log_lines_once_and_runs_in_order(store: SqlArtifactsStore, tmp_path: Path) -> None:
    assert store.add_log_lines("job-1", "server.log", "run-a", 0, ["a", "b"]) == 2
    assert store.add_log_lines("job-1", "server.log", "run-a", 0, ["a", "b"]) == 0
    assert store.add_log_lines("job-1", "server.log", "run-b", 0, ["x"]) == 1
    assert store.add_log_lines("job-1", "server.log", "run-a", 1, ["b", "c"]) == 1
    dirty = store.dirty_log_files("job-1")
    assert [(d.file_name, d.version) for d in dirty] == [("server.log", 3)]
    path = tmp_path / "server.log"
    render_log_file(store, "job-1", "server.log", path)
    assert path.read_text().splitlines() == ["a", "b", "c", separator_line("run-b"), "x"]
    store.mark_log_flushed("job-1", "server.log", 3)
    assert store.dirty_log_files() == []
