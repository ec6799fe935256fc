"""How long the artifacts service has waited for an ended job's last round, counted from when
it caught up with the job, not from when the job ended.

After an artifacts outage the job's end event and its rounds come back together as a backlog:
a wait measured from the job's end (`occurred_at`) would already be over, and the outputs would
be announced before the final model is written. The wait here starts the first time this
process sees the job's end event, and starts again each time a round of the job is recorded,
so it expires only after `artifacts_last_round_wait_s` without any progress on the job.
A restart of the service starts every wait afresh: a wait can only get longer, never shorter.
"""

import time
from collections.abc import Callable


class CatchUpClock:
    """Per job: when this process first saw its end event, and when it last recorded one of its
    rounds. Entries live until `forget` (the outputs were announced)."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._end_seen: dict[str, float] = {}
        self._last_round: dict[str, float] = {}

    def progressed(self, job_id: str) -> None:
        """A round of the job was recorded: a wait for its last round starts again."""
        self._last_round[job_id] = self._now()

    def waited_s(self, job_id: str) -> float:
        """Seconds since the later of: the job's end event first seen (this call, the first
        time), its last round recorded."""
        now = self._now()
        end_seen = self._end_seen.setdefault(job_id, now)
        return now - max(end_seen, self._last_round.get(job_id, end_seen))

    def forget(self, job_id: str) -> None:
        self._end_seen.pop(job_id, None)
        self._last_round.pop(job_id, None)
