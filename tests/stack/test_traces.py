"""`rondo trace JOB_ID`: whole traces of a job from the span files, as trees with durations."""

import json
from pathlib import Path

from typer.testing import CliRunner

from rondo.cli import main
from rondo.traces import job_traces, read_spans

MS = 1_000_000


def span(trace: str, span_id: str, parent: str | None, name: str, start_ms: int, end_ms: int,
         job_id: str | None = None) -> dict[str, object]:  # fmt: skip
    return {
        "trace_id": trace,
        "span_id": span_id,
        "parent_id": parent,
        "name": name,
        "service": "rondo-gateway" if parent is None else "rondo-scheduler",
        "start_ns": start_ms * MS,
        "end_ns": end_ms * MS,
        "attributes": {"rondo.job_id": job_id} if job_id else {},
        "status": "UNSET",
    }


def write_spans(spans_dir: Path) -> None:
    spans_dir.mkdir(parents=True)
    gateway = [
        span("t1", "a", None, "POST /api/jobs", 0, 40, job_id="job-1"),
        span("t2", "x", None, "POST /api/jobs", 100, 110, job_id="job-2"),
    ]
    scheduler = [
        span("t1", "c", "a", "place job", 20, 35),
        span("t1", "b", "a", "rondo.job.submitted publish", 5, 10),
        span("t1", "d", "c", "provision", 21, 30),
    ]
    (spans_dir / "gateway.jsonl").write_text("".join(json.dumps(s) + "\n" for s in gateway))
    scheduler_lines = "".join(json.dumps(s) + "\n" for s in scheduler) + '{"torn'
    (spans_dir / "scheduler.jsonl").write_text(scheduler_lines)


def test_a_jobs_whole_trace_is_one_tree(tmp_path: Path) -> None:
    write_spans(tmp_path / "spans")
    (trace,) = job_traces(read_spans(tmp_path / "spans"), "job-1")
    assert trace.trace_id == "t1" and trace.span_count == 4
    (root,) = trace.roots
    assert [child.span.name for child in root.children] == [
        "rondo.job.submitted publish",
        "place job",
    ]
    assert root.children[1].children[0].span.name == "provision"
    assert root.span.duration_ms == 40.0


def test_trace_command_prints_the_tree(tmp_path: Path) -> None:
    write_spans(tmp_path / "spans")
    result = CliRunner().invoke(main, ["trace", "job-1", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "POST /api/jobs" in result.output and "40.0 ms" in result.output
    assert "provision" in result.output and "9.0 ms" in result.output
    missing = CliRunner().invoke(main, ["trace", "job-404", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 1
