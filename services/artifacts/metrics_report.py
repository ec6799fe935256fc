"""The per-job reports under `files_out/`, rendered from the recorded rounds.

Pure functions: the same rounds always render the same bytes, so re-rendering after a
redelivered or replaced round is harmless.

Best round rule (`best_round` in `metrics.json`, and `model_out/best_model.pt`):
1. if any round reports `loss`: the round with the lowest `loss`;
2. else if any reports `accuracy`, else `miou`: the round with the highest value;
3. else the first metric name of the earliest round that has metrics: the highest value;
4. with no metrics at all: the latest round.
Ties go to the earlier round; non-finite values (NaN, inf) never win.
`best_metric` names the metric used, and `best_<name>` gives every metric of the best round
(e.g. `best_loss`, `best_accuracy`, `best_miou`).
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rondo.artifacts.models import RoundRecord
from rondo.contracts.layout import client_name

LOSS = "loss"
SCORES_BY_PREFERENCE = ("accuracy", "miou")


@dataclass(frozen=True)
class Criterion:
    metric: str
    lower_is_better: bool


@dataclass(frozen=True)
class Best:
    round: int
    criterion: Criterion | None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _has(rounds: Sequence[RoundRecord], metric: str) -> bool:
    return any(_finite(r.metrics.get(metric)) is not None for r in rounds)


def choose_criterion(rounds: Sequence[RoundRecord]) -> Criterion | None:
    """The metric that ranks rounds (see the module docstring), or None without metrics."""
    if _has(rounds, LOSS):
        return Criterion(LOSS, lower_is_better=True)
    for metric in SCORES_BY_PREFERENCE:
        if _has(rounds, metric):
            return Criterion(metric, lower_is_better=False)
    for record in sorted(rounds, key=lambda r: r.round):
        for metric, value in record.metrics.items():
            if _finite(value) is not None:
                return Criterion(metric, lower_is_better=False)
    return None


def best_round(rounds: Sequence[RoundRecord]) -> Best | None:
    """The best of the recorded rounds; None only when there are no rounds."""
    if not rounds:
        return None
    ordered = sorted(rounds, key=lambda r: r.round)
    criterion = choose_criterion(ordered)
    if criterion is None:
        return Best(round=ordered[-1].round, criterion=None)
    best: RoundRecord | None = None
    best_value = 0.0
    for record in ordered:
        value = _finite(record.metrics.get(criterion.metric))
        if value is None:
            continue
        better = value < best_value if criterion.lower_is_better else value > best_value
        if best is None or better:
            best, best_value = record, value
    assert best is not None  # the criterion was chosen because some round has it
    return Best(round=best.round, criterion=criterion)


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: they become null."""
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _dump(document: dict[str, Any]) -> bytes:
    return (json.dumps(_json_safe(document), indent=2, allow_nan=False) + "\n").encode()


def samples_by_client(record: RoundRecord) -> dict[str, int]:
    samples: dict[str, int] = {}
    for contribution in sorted(record.contributions, key=lambda c: c.slot):
        name = client_name(contribution.slot)
        samples[name] = samples.get(name, 0) + contribution.samples
    return samples


def metrics_document(rounds: Sequence[RoundRecord]) -> dict[str, Any]:
    """`metrics.json`: one entry a round (loss apart from the other metrics), then best_*."""
    ordered = sorted(rounds, key=lambda r: r.round)
    document: dict[str, Any] = {
        "rounds": [
            {
                "round": r.round,
                "loss": r.metrics.get(LOSS),
                "metrics": {k: v for k, v in r.metrics.items() if k != LOSS},
                "samples": samples_by_client(r),
                "duration_s": r.duration_s,
                "completed_at": r.completed_at.isoformat(),
                "run_id": r.run_id,
            }
            for r in ordered
        ],
        "num_rounds": ordered[-1].num_rounds if ordered else None,
        "best_round": None,
        "best_metric": None,
    }
    best = best_round(ordered)
    if best is not None:
        document["best_round"] = best.round
        document["best_metric"] = best.criterion.metric if best.criterion else None
        winner = next(r for r in ordered if r.round == best.round)
        for metric, value in winner.metrics.items():
            document[f"best_{metric}"] = value
    return document


def render_metrics_json(rounds: Sequence[RoundRecord]) -> bytes:
    return _dump(metrics_document(rounds))


def _format_value(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def training_log_line(record: RoundRecord) -> str:
    """`<completed_at ISO> round <r>/<n> loss=<v> <metric>=<v> ... samples=<n> duration=<s>s`."""
    parts = [
        record.completed_at.isoformat(timespec="seconds"),
        f"round {record.round}/{record.num_rounds}",
    ]
    if LOSS in record.metrics:
        parts.append(f"loss={_format_value(record.metrics[LOSS])}")
    parts.extend(
        f"{name}={_format_value(value)}" for name, value in record.metrics.items() if name != LOSS
    )
    parts.append(f"samples={sum(c.samples for c in record.contributions)}")
    parts.append(f"duration={record.duration_s:.1f}s")
    return " ".join(parts)


def render_training_log(rounds: Sequence[RoundRecord]) -> bytes:
    """`training_log.txt`: one timestamped line a round, by round number."""
    lines = [training_log_line(r) for r in sorted(rounds, key=lambda r: r.round)]
    return "".join(line + "\n" for line in lines).encode()


def rounds_document(rounds: Sequence[RoundRecord]) -> dict[str, Any]:
    """`fl_round_complete.json`: each completed round with every worker's contribution."""
    return {
        "rounds": [
            {
                "round": r.round,
                "num_rounds": r.num_rounds,
                "run_id": r.run_id,
                "completed_at": r.completed_at.isoformat(),
                "duration_s": r.duration_s,
                "metrics": r.metrics,
                "contributions": [
                    {
                        "client": client_name(c.slot),
                        "slot": c.slot,
                        "site_name": c.site_name,
                        "samples": c.samples,
                        "metrics": c.metrics,
                    }
                    for c in sorted(r.contributions, key=lambda c: c.slot)
                ],
            }
            for r in sorted(rounds, key=lambda r: r.round)
        ]
    }


def render_rounds_json(rounds: Sequence[RoundRecord]) -> bytes:
    return _dump(rounds_document(rounds))
