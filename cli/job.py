"""`Job`: one submitted job, followed live and its model fetched.

`events()` iterates the job's Server-Sent Events, `wait()` follows them to a terminal state
(reconnecting when the stream drops), `download_model()` fetches a checkpoint from
`model_out/` verified against its checksum.
"""

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rondo.contracts.api import JobMetrics, JobPublic, JobStreamEvent, RoundPublic
from rondo.contracts.layout import model_file_name, model_out_key
from rondo.errors import ApiError, ConnectionFailed, OutputsPending
from rondo.transfers import TransferListener

if TYPE_CHECKING:
    from rondo.client import Client

# How long to wait for an ended job's outputs to be written, or for the checkpoint of a
# running job's first round to appear.
OUTPUTS_SETTLE_S = 60.0
OUTPUTS_POLL_S = 0.5

RECONNECT_DELAY_S = 1.0
_JOB_EVENTS = {
    JobStreamEvent.SNAPSHOT,
    JobStreamEvent.STATE,
    JobStreamEvent.PROGRESS,
    JobStreamEvent.FAILED,
}


class JobUpdate(BaseModel):
    """One event of a job's stream: the job's new view (snapshot, state, progress, failed),
    a completed round, or another kind (e.g. `log`) with its raw data."""

    event: str
    job: JobPublic | None = None
    round: RoundPublic | None = None
    data: Any = None


class Job:
    """A job of the current user; `view` is its latest known state."""

    def __init__(self, client: "Client", view: JobPublic) -> None:
        self._client = client
        self.view = view

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, name={self.name!r}, state={self.view.state.value!r})"

    @property
    def id(self) -> str:
        return self.view.id

    @property
    def name(self) -> str:
        return self.view.name

    def refresh(self) -> JobPublic:
        self.view = self._client.get_job(self.id)
        return self.view

    def cancel(self) -> JobPublic:
        """Cancel: it ends CANCELLED, partial outputs kept."""
        self.view = self._client.cancel(self.id)
        return self.view

    def stop(self) -> JobPublic:
        """Stop after the completed rounds: it ends FINISHED with their outputs."""
        self.view = self._client.stop(self.id)
        return self.view

    def metrics(self) -> JobMetrics:
        return self._client.metrics(self.id)

    def events(self) -> Iterator[JobUpdate]:
        """The job's live events, a `snapshot` first; ends when the server closes the
        stream (raises `ConnectionFailed` when it breaks off)."""
        for message in self._client.api.stream_events(f"/api/jobs/{self.id}/events"):
            update = JobUpdate(event=message.event, data=message.data)
            if message.event in _JOB_EVENTS:
                update.job = self.view = JobPublic.model_validate(message.data)
            elif message.event == JobStreamEvent.ROUND:
                update.round = RoundPublic.model_validate(message.data)
            yield update

    def wait(
        self,
        timeout_s: float | None = None,
        on_update: Callable[[JobUpdate], None] | None = None,
    ) -> JobPublic:
        """Follow the job until it is FINISHED, FAILED or CANCELLED; returns its final view.

        `on_update` hears every event. A dropped stream is reopened (its snapshot catches up);
        raises `TimeoutError` after `timeout_s`.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                for update in self.events():
                    if on_update is not None:
                        on_update(update)
                    if self.view.state.is_terminal:
                        return self.view
                    if deadline is not None and time.monotonic() > deadline:
                        break
            except ConnectionFailed:
                if deadline is not None and time.monotonic() > deadline:
                    raise
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} is still {self.view.state} after {timeout_s} s")
            time.sleep(RECONNECT_DELAY_S)

    def download_model(
        self,
        round: int | None = None,
        target: Path | None = None,
        listener: TransferListener | None = None,
    ) -> Path:
        """Fetch `model_out/global_model.pt` (or the checkpoint of round `round`) into
        `target` (default: the file's name in the current folder), verified against its
        checksum. Load it with `model.load_state_dict(torch.load(path))`.

        Of an ended job, the final file: waits until the platform says its model files are
        final (raises `OutputsPending` after `OUTPUTS_SETTLE_S`). Of a running job, the latest.
        """
        name = model_file_name(round)
        key = model_out_key(self.view.files_prefix.rstrip("/") + "/", name)
        target = target or Path.cwd() / name
        deadline = time.monotonic() + OUTPUTS_SETTLE_S
        self.wait_for_outputs(deadline)
        while True:
            try:
                return self._client.files.download(key, target, listener)
            except ApiError as error:
                if error.status_code != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(OUTPUTS_POLL_S)

    def wait_for_outputs(self, deadline: float) -> None:
        """If the job has ended, wait until its model files and reports are final
        (`outputs_written_at`); raises `OutputsPending` at `deadline` (`time.monotonic()`)."""
        while self.refresh().state.is_terminal and self.view.outputs_written_at is None:
            if time.monotonic() > deadline:
                raise OutputsPending(
                    f"job {self.id} is {self.view.state} but its outputs are still being "
                    "written; global_model.pt may hold an earlier round",
                    "Try again in a minute; if it persists, check that the artifacts service "
                    "is healthy (`rondo status` for a local stack) and read its log.",
                )
            time.sleep(OUTPUTS_POLL_S)
