"""The last-round wait counts from when the artifacts service caught up with a job (its end
event first seen, or one of its rounds recorded since), never from the job's end time."""

from rondo.artifacts.catch_up import CatchUpClock


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_starts_when_the_end_is_first_seen_and_restarts_with_each_round() -> None:
    clock = _Clock()
    catch_up = CatchUpClock(clock)
    clock.now += 3600  # a long outage: the job ended an hour before the service saw it
    assert catch_up.waited_s("j") == 0.0
    clock.now += 100
    assert catch_up.waited_s("j") == 100.0
    catch_up.progressed("j")  # a round of the backlog recorded
    clock.now += 30
    assert catch_up.waited_s("j") == 30.0


def test_rounds_recorded_before_the_end_was_seen_do_not_shorten_the_wait() -> None:
    clock = _Clock()
    catch_up = CatchUpClock(clock)
    catch_up.progressed("j")
    clock.now += 500
    assert catch_up.waited_s("j") == 0.0
    catch_up.forget("j")
    clock.now += 10
    assert catch_up.waited_s("j") == 0.0, "a forgotten job starts afresh"
