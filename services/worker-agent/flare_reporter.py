"""`RoundReporter`: the server-side FLComponent that writes a run's spool files.

Added to every app the platform submits (generated or the user's own). It follows the
workflow's events and writes, into `$RONDO_SPOOL_DIR`, the records of
`rondo.contracts.spool`: `run_started.json`, then per round `round_<r:05d>.pt` (plain state
dict) and `round_<r:05d>.json`, and `run_ended.json`. Files are written by a background thread,
each to `*.tmp` and renamed; a round's `.json` is renamed after its `.pt`.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from nvflare.apis.dxo import DataKind, MetaKey, from_shareable
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.abstract.model import ModelLearnable, ModelLearnableKey
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from rondo.contracts.spool import (
    RUN_ENDED_FILE,
    RUN_STARTED_FILE,
    SPOOL_ENV,
    RoundRecord,
    RunEndedRecord,
    RunStartedRecord,
    SpoolContribution,
    round_stem,
    write_record,
)
from rondo.worker_agent.flare_model import ERROR_HEADER, to_torch, torch_dtypes


class RoundReporter(FLComponent):
    """Writes the spool files of one NVFlare run (see the module docstring)."""

    def __init__(self, spool_dir: str = "") -> None:
        super().__init__()
        self.spool_dir = spool_dir
        self._spool = Path()
        self._writer: ThreadPoolExecutor | None = None
        self._reset()

    def _reset(self) -> None:
        self._first_round: int | None = None
        self._rounds_to_run: int | None = None
        self._current_round: int | None = None
        self._round_started_at = 0.0
        self._contributions: list[SpoolContribution] = []
        self._aggregation_result: object = None
        self._reported_rounds: set[int] = set()
        self._dtypes: dict[str, torch.dtype] = {}
        self._fatal_error: str | None = None
        self._site_errors: dict[str, str] = {}

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        handler = {
            EventType.START_RUN: self._on_start_run,
            AppEventType.ROUND_STARTED: self._on_round_started,
            EventType.BEFORE_TASK_RESULT_FILTER: self._on_task_result,
            AppEventType.AFTER_CONTRIBUTION_ACCEPT: self._on_contribution,
            AppEventType.AFTER_AGGREGATION: self._on_aggregation,
            AppEventType.AFTER_LEARNABLE_PERSIST: self._on_round_complete,
            # Workflows that skip persisting a round still end it with ROUND_DONE.
            AppEventType.ROUND_DONE: self._on_round_complete,
            EventType.FATAL_SYSTEM_ERROR: self._on_fatal_error,
            EventType.END_RUN: self._on_end_run,
        }.get(event_type)
        if handler is None:
            return
        try:
            handler(fl_ctx)
        except Exception as error:  # never let reporting break the training run
            self.log_exception(fl_ctx, f"RoundReporter failed on {event_type}: {error}")

    # --- events ----------------------------------------------------------------------------

    def _on_start_run(self, fl_ctx: FLContext) -> None:
        self._reset()
        self._spool = Path(self.spool_dir or os.environ.get(SPOOL_ENV) or "rondo_spool")
        self._spool.mkdir(parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rondo-spool")
        self._submit(
            write_record,
            self._spool / RUN_STARTED_FILE,
            RunStartedRecord(nvflare_job_id=fl_ctx.get_job_id()),
        )

    def _on_round_started(self, fl_ctx: FLContext) -> None:
        self._current_round = int(fl_ctx.get_prop(AppConstants.CURRENT_ROUND, 0))
        if self._first_round is None:
            self._first_round = self._current_round
            rounds = fl_ctx.get_prop(AppConstants.NUM_ROUNDS)
            self._rounds_to_run = int(rounds) if rounds is not None else None
            initial = _weights_of(fl_ctx.get_prop(AppConstants.GLOBAL_MODEL))
            self._dtypes = torch_dtypes(initial) if initial else {}
        self._round_started_at = time.monotonic()
        self._contributions = []
        self._aggregation_result = None

    def _on_task_result(self, fl_ctx: FLContext) -> None:
        """Remember why a site's task failed (our executor says so in a header)."""
        result = fl_ctx.get_prop(FLContextKey.TASK_RESULT)
        error = result.get_header(ERROR_HEADER) if isinstance(result, Shareable) else None
        if error:
            peer = fl_ctx.get_peer_context()
            self._site_errors[peer.get_identity_name() if peer else "?"] = str(error)

    def _on_contribution(self, fl_ctx: FLContext) -> None:
        if fl_ctx.get_prop(AppConstants.AGGREGATION_ACCEPTED) is False:
            return
        result = fl_ctx.get_prop(AppConstants.TRAINING_RESULT)
        model = result if isinstance(result, FLModel) else FLModelUtils.from_shareable(result)
        samples = (model.meta or {}).get(MetaKey.NUM_STEPS_CURRENT_ROUND)
        peer = fl_ctx.get_peer_context()
        self._contributions.append(
            SpoolContribution(
                site_name=peer.get_identity_name() if peer else "",
                samples=int(samples) if isinstance(samples, int | float) else 0,
                metrics=_numeric(model.metrics),
            )
        )

    def _on_aggregation(self, fl_ctx: FLContext) -> None:
        self._aggregation_result = fl_ctx.get_prop(AppConstants.AGGREGATION_RESULT)

    def _on_round_complete(self, fl_ctx: FLContext) -> None:
        round_ = self._current_round
        if round_ is None or round_ in self._reported_rounds:
            return
        weights = _weights_of(fl_ctx.get_prop(AppConstants.GLOBAL_MODEL))
        if not weights:
            weights = _weights_of(self._aggregation_result)
        if not weights:
            self.log_warning(fl_ctx, f"round {round_}: no global weights found to checkpoint")
            return
        self._reported_rounds.add(round_)
        summary = RoundRecord(
            round=round_,
            num_rounds=self._total_rounds(),
            metrics=weighted_mean_metrics(self._contributions),
            contributions=self._contributions,
            duration_s=round(time.monotonic() - self._round_started_at, 3),
        )
        self._submit(self._write_round, round_, weights, summary)

    def _on_fatal_error(self, fl_ctx: FLContext) -> None:
        reason = fl_ctx.get_prop(FLContextKey.EVENT_DATA)
        if self._fatal_error is None and reason:
            self._fatal_error = str(reason)

    def _on_end_run(self, fl_ctx: FLContext) -> None:
        completed = (
            self._rounds_to_run is not None
            and len(self._reported_rounds) >= self._rounds_to_run
            and self._fatal_error is None
        )
        error = None if completed else self._end_reason()
        self._submit(
            write_record,
            self._spool / RUN_ENDED_FILE,
            RunEndedRecord(completed=completed, error=error),
        )
        if self._writer:
            self._writer.shutdown(wait=True)
            self._writer = None

    def _end_reason(self) -> str:
        """Why the run ended early: the workflow's panic, else how far it got; then each
        site's own error."""
        if self._fatal_error:
            reason = self._fatal_error
        elif self._reported_rounds:
            reason = f"run ended after round {max(self._reported_rounds)}"
        else:
            reason = "run ended before any round"
        return reason + "".join(
            f"\n{site}: {text}" for site, text in sorted(self._site_errors.items())
        )

    # --- writing ---------------------------------------------------------------------------

    def _total_rounds(self) -> int | None:
        if self._first_round is None or self._rounds_to_run is None:
            return None
        return self._first_round + self._rounds_to_run

    def _submit(self, fn: Any, *args: Any) -> None:
        if self._writer is None:  # END_RUN without START_RUN: write inline
            fn(*args)
        else:
            self._writer.submit(_logged(self, fn), *args)

    def _write_round(self, round_: int, weights: dict[str, Any], summary: RoundRecord) -> None:
        stem = round_stem(round_)
        checkpoint = self._spool / f"{stem}.pt"
        tmp = checkpoint.with_name(checkpoint.name + ".tmp")
        torch.save(to_torch(weights, self._dtypes), tmp)
        tmp.replace(checkpoint)
        write_record(self._spool / f"{stem}.json", summary)


def weighted_mean_metrics(contributions: list[SpoolContribution]) -> dict[str, float]:
    """Each metric's mean over the contributions that report it, weighted by their samples
    (plain mean when those contributions report no samples)."""
    names = {name for c in contributions for name in c.metrics}
    means: dict[str, float] = {}
    for name in sorted(names):
        reporting = [c for c in contributions if name in c.metrics]
        total = sum(c.samples for c in reporting)
        if total > 0:
            means[name] = sum(c.metrics[name] * c.samples for c in reporting) / total
        else:
            means[name] = sum(c.metrics[name] for c in reporting) / len(reporting)
    return means


def _weights_of(model: object) -> dict[str, Any]:
    """Full model weights from whatever the workflow exposes (learnable, FLModel, DXO)."""
    if isinstance(model, ModelLearnable):
        return dict(model.get(ModelLearnableKey.WEIGHTS) or {})
    if isinstance(model, FLModel):
        full = model.params_type in (None, ParamsType.FULL)
        return dict(model.params or {}) if full else {}
    if isinstance(model, Shareable):
        dxo = from_shareable(model)
        return dict(dxo.data or {}) if dxo.data_kind == DataKind.WEIGHTS else {}
    return {}


def _numeric(metrics: dict[str, Any] | None) -> dict[str, float]:
    return {
        str(k): float(v)
        for k, v in (metrics or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _logged(component: FLComponent, fn: Any) -> Any:
    """Run `fn` on the writer thread, logging (not losing) its failure."""

    def run(*args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            component.logger.exception(f"spool write {getattr(fn, '__name__', fn)} failed")

    return run
