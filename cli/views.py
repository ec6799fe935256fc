"""How the CLI draws jobs, their workers and rounds, and metrics (rich renderables)."""

from datetime import datetime

import asciichartpy
from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rondo.contracts.api import JobMetrics, JobPublic, RoundPublic
from rondo.contracts.states import JobState, SlotStatus

STATE_STYLES = {
    JobState.PENDING: "yellow",
    JobState.RUNNING: "cyan",
    JobState.FINISHED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "magenta",
}
SLOT_STYLES = {
    SlotStatus.CONNECTED: "green",
    SlotStatus.DONE: "green",
    SlotStatus.ERROR: "red",
    SlotStatus.DISCONNECTED: "red",
}
PLOT_HEIGHT = 10
PLOT_WIDTH = 60  # columns; fewer rounds are stretched to it


def state_text(state: JobState) -> Text:
    return Text(state.value, style=STATE_STYLES.get(state, ""))


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%m-%d %H:%M:%S")


def jobs_table(jobs: list[JobPublic], total: int) -> Table:
    table = Table(
        title=f"{len(jobs)} of {total} job(s)", title_justify="left", box=box.SIMPLE, pad_edge=False
    )
    # Whole ids (the other commands take them) and states; names and reasons wrap.
    for column in ("id", "name", "state", "round", "workers", "created"):
        table.add_column(column, no_wrap=column != "name", overflow="fold")
    table.add_column("reason", ratio=1, overflow="fold")
    for job in jobs:
        panel = job.workers
        table.add_row(
            job.id,
            escape(job.name),
            state_text(job.state),
            f"{job.current_round}/{job.num_rounds}",
            f"{panel.connected}/{panel.total}",
            _when(job.created_at),
            escape(job.reason),
        )
    return table


def job_view(job: JobPublic, rounds: list[RoundPublic]) -> RenderableType:
    """A job's state, worker panel, slots and completed rounds."""
    header = Text.assemble(
        (job.name, "bold"),
        f"  {job.id}  ",
        state_text(job.state),
        f"  round {job.current_round}/{job.num_rounds}",
    )
    parts: list[RenderableType] = [header]
    if job.reason:
        parts.append(Text(job.reason, style="dim"))
    panel = job.workers
    parts.append(
        Text.assemble(
            "workers  ",
            ("total ", "dim"),
            str(panel.total),
            ("  connected ", "dim"),
            (str(panel.connected), "green" if panel.connected == panel.total else "yellow"),
            ("  errors ", "dim"),
            (str(panel.errors), "red" if panel.errors else ""),
            ("  disconnected ", "dim"),
            (str(panel.disconnected), "red" if panel.disconnected else ""),
        )
    )
    if job.state.is_terminal:
        parts.append(_outputs_line(job))
    if job.slots:
        parts.append(_slots_table(job))
    if rounds:
        parts.append(rounds_table(rounds))
    if job.error is not None:
        parts.append(
            Text.assemble(
                ("error ", "bold red"),
                f"({job.error.cause.value}): {job.error.message}\n",
                ("hint ", "dim"),
                job.error.hint,
            )
        )
    return Panel(Group(*parts), title="Rondo job", title_align="left")


def _outputs_line(job: JobPublic) -> Text:
    """Whether an ended job's outputs are final yet (downloads before may be stale)."""
    if job.outputs_written_at is None:
        return Text.assemble("outputs  ", ("being written", "yellow"))
    return Text.assemble(
        "outputs  ", ("written", "green"), f" {_when(job.outputs_written_at)}  ({job.files_prefix})"
    )


def _slots_table(job: JobPublic) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("slot", "site", "worker", "status", "last heartbeat"):
        table.add_column(column, style="dim" if column == "last heartbeat" else None)
    for slot in job.slots:
        table.add_row(
            str(slot.slot),
            slot.site_name,
            slot.agent_id or "-",
            Text(slot.status.value, style=SLOT_STYLES.get(slot.status, "")),
            _heartbeat(slot.last_heartbeat_at),
        )
    return table


def _heartbeat(moment: str | None) -> str:
    """An ISO timestamp as local time of day (as sent, when it is not one)."""
    if not moment:
        return ""
    try:
        return datetime.fromisoformat(moment).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return moment


def rounds_table(rounds: list[RoundPublic]) -> Table:
    """One row a round: its aggregated metrics, samples per worker and duration."""
    names = sorted({name for r in rounds for name in r.metrics})
    table = Table(title="rounds", title_justify="left")
    table.add_column("round", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("samples", justify="right")
    table.add_column("duration", justify="right")
    for entry in rounds:
        metrics = [_number(entry.metrics.get(name)) for name in names]
        ordered = sorted(entry.contributions, key=lambda contribution: contribution.slot)
        samples = "+".join(str(contribution.samples) for contribution in ordered)
        table.add_row(str(entry.round), *metrics, samples, f"{entry.duration_s:.1f} s")
    return table


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def metrics_plots(metrics: JobMetrics) -> RenderableType:
    """One terminal line chart per metric, rounds along the x axis."""
    rounds = metrics.rounds
    names = sorted({name for r in rounds for name in r.metrics})
    charts: list[RenderableType] = []
    for name in names:
        series = [r.metrics[name] for r in rounds if name in r.metrics]
        if not series:
            continue
        chart = asciichartpy.plot(
            _stretched(series, PLOT_WIDTH), {"height": PLOT_HEIGHT, "format": "{:9.4f} "}
        )
        charts.append(Text(f"{name} by round (0..{rounds[-1].round})", style="bold"))
        charts.append(Text(chart))
    return Group(*charts) if charts else Text("no metrics yet")


def _stretched(series: list[float], width: int) -> list[float]:
    """`series` linearly interpolated to `width` points (one chart column each), so a few
    rounds still draw a readable line; longer series are kept as they are."""
    if len(series) >= width:
        return series
    if len(series) == 1:
        return series * width
    step = (len(series) - 1) / (width - 1)
    points = []
    for column in range(width):
        position = column * step
        left = min(int(position), len(series) - 2)
        fraction = position - left
        points.append(series[left] + (series[left + 1] - series[left]) * fraction)
    return points
