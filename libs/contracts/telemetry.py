"""Tracing and structured logs, set up the same way in every service.

Spans go to OTLP/HTTP when `RONDO_OTLP_ENDPOINT` is set, otherwise to JSON lines under
`<data_dir>/spans/` so `rondo trace JOB_ID` can print a job's span tree offline. Export runs on
a background thread with a short timeout: a dead collector never slows a request.
"""

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from rondo.contracts.config import ServiceSettings

JOB_ID_ATTRIBUTE = "rondo.job_id"


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans as JSON lines to one file per service."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(span_record(span)) for span in spans]
        with self._lock, self._path.open("a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def span_record(span: ReadableSpan) -> dict[str, object]:
    context = span.get_span_context()
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": {key: str(value) for key, value in (span.attributes or {}).items()},
        "status": span.status.status_code.name,
    }


def setup_tracing(settings: ServiceSettings, service: str) -> TracerProvider:
    """Install the global tracer provider for this process."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"rondo-{service}"}))
    exporter: SpanExporter
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, timeout=2)
    else:
        exporter = JsonLinesSpanExporter(settings.spans_dir / f"{service}.jsonl")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)
    return provider


def tag_job(job_id: str) -> None:
    """Mark the current span as belonging to a job, so `rondo trace` can find it."""
    trace.get_current_span().set_attribute(JOB_ID_ATTRIBUTE, job_id)


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = f"{span_context.trace_id:032x}"
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(settings: ServiceSettings, service: str, instance: str | None = None) -> Path:
    """Structured JSON lines to `<data_dir>/logs/<service>[-<instance>].log`, plus stderr."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    path = settings.log_dir / f"{service}{'-' + instance if instance else ''}.log"
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(JsonLogFormatter())
    stream_handler = logging.StreamHandler()
    stream_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [file_handler, stream_handler]
    root.setLevel(settings.log_level)
    return path
