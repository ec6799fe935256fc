"""A job's traces from the span files the services write (`<data-dir>/spans/*.jsonl`).

Each line is `rondo.contracts.telemetry.span_record`. A trace belongs to a job when any of its
spans has the attribute `rondo.job_id` equal to the job's id; the whole trace is kept.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ValidationError

from rondo.contracts.telemetry import JOB_ID_ATTRIBUTE


class SpanRecord(BaseModel):
    trace_id: str
    span_id: str
    parent_id: str | None = None
    name: str
    service: str | None = None
    start_ns: int
    end_ns: int | None = None
    attributes: dict[str, str] = {}
    status: str = "UNSET"

    @property
    def duration_ms(self) -> float | None:
        return None if self.end_ns is None else (self.end_ns - self.start_ns) / 1e6


@dataclass
class SpanNode:
    span: SpanRecord
    children: list["SpanNode"] = field(default_factory=list)


@dataclass
class Trace:
    trace_id: str
    roots: list[SpanNode]
    span_count: int

    @property
    def start_ns(self) -> int:
        return min(root.span.start_ns for root in self.roots)


def read_spans(spans_dir: Path) -> list[SpanRecord]:
    """Every readable span in the folder's `*.jsonl` files (a torn last line is skipped)."""
    spans: list[SpanRecord] = []
    for path in sorted(spans_dir.glob("*.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    spans.append(SpanRecord.model_validate(json.loads(line)))
                except (json.JSONDecodeError, ValidationError):
                    continue
    return spans


def job_traces(spans: list[SpanRecord], job_id: str) -> list[Trace]:
    """The traces with a span tagged with `job_id`, oldest first, each as a span tree.

    A span whose parent is not in the files (not exported yet, or from outside) is a root."""
    trace_ids = {s.trace_id for s in spans if s.attributes.get(JOB_ID_ATTRIBUTE) == job_id}
    by_trace: dict[str, dict[str, SpanRecord]] = {}
    for span in spans:
        if span.trace_id in trace_ids:
            by_trace.setdefault(span.trace_id, {})[span.span_id] = span
    traces = [_build_tree(trace_id, members) for trace_id, members in by_trace.items()]
    return sorted(traces, key=lambda trace: trace.start_ns)


def _build_tree(trace_id: str, members: dict[str, SpanRecord]) -> Trace:
    nodes = {span_id: SpanNode(span) for span_id, span in members.items()}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(node.span.parent_id or "")
        (parent.children if parent is not None else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=lambda child: child.span.start_ns)
    roots.sort(key=lambda root: root.span.start_ns)
    return Trace(trace_id=trace_id, roots=roots, span_count=len(nodes))
