"""The platform on a 3-node NATS cluster: streams replicated as configured, and a job that
keeps going when the node leading its stream dies."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.failover import JOB_NAME, leader_failover_run

from rondo.contracts.bus import declare_streams, make_broker
from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import Event, JobFinished, RoundCompleted, WorkerHeartbeat
from rondo.contracts.states import JobState
from rondo.contracts.subjects import ALL_STREAMS, staging_stream_name, stream_of, subject_matches
from rondo.stack.servers import NatsCluster

ROUNDS = 5


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "nats")
    cluster.start(tmp_path / "logs")
    yield cluster
    cluster.stop()


async def test_streams_and_staging_store_get_the_configured_replicas(
    cluster: NatsCluster,
) -> None:
    settings = ServiceSettings(nats_url=cluster.url, nats_stream_replicas=3)
    assert settings.nats_servers == [node.url for node in cluster.nodes]
    broker = make_broker(settings, "replicas-test")
    await broker.connect()
    try:
        await declare_streams(broker, replicas=1)  # as a single-server deployment left them
        await declare_streams(broker, settings.nats_stream_replicas)
        js = broker.config.connection_state.stream
        names = [spec.name for spec in ALL_STREAMS] + [staging_stream_name()]
        replicas = {name: (await js.stream_info(name)).config.num_replicas for name in names}
    finally:
        await broker.stop()
    assert replicas == dict.fromkeys(names, 3)


def all_event_types(base: type[Event] = Event) -> list[type[Event]]:
    found = []
    for child in base.__subclasses__():
        found += [child, *all_event_types(child)]
    return found


def test_every_event_but_heartbeats_is_published_to_a_stream() -> None:
    """`publish` waits for JetStream's ack (and retries) exactly for these."""
    for event_type in all_event_types():
        if "SUBJECT" not in vars(event_type):
            continue
        subject = event_type.SUBJECT.replace("{", "").replace("}", "")  # templates: any token
        stored_in = stream_of(subject)
        if event_type is WorkerHeartbeat:
            assert stored_in is None
        else:
            assert stored_in is not None, f"{event_type.__name__} ({subject}) in no stream"


@pytest.mark.timeout(600)
def test_job_finishes_every_round_once_when_its_stream_leader_dies(tmp_path: Path) -> None:
    with leader_failover_run(tmp_path, ROUNDS) as run:
        print(
            f"\nkilled {run.killed_node} after round {run.round_at_kill}: "
            f"{run.new_leader} leads RONDO_JOBS after {run.new_leader_after_s:.1f} s, "
            f"the job's next round visible after {run.job_resumed_after_s:.1f} s"
        )
        job = run.job
        assert job["state"] == JobState.FINISHED, job
        assert [t["state"] for t in job["transitions"]] == ["PENDING", "RUNNING", "FINISHED"]
        assert job["current_round"] == ROUNDS
        assert 1 <= run.round_at_kill < ROUNDS, "the leader must die mid-job"
        assert run.new_leader and run.new_leader != run.killed_node

        # Stored once each (JetStream de-duplicated every retried publish) ...
        rounds = RoundCompleted.filter_subject()  # the subject names the publishing agent
        stored = run.stored_per_subject.items()
        assert sum(n for subject, n in stored if subject_matches(subject, rounds)) == ROUNDS
        assert run.stored_per_subject[JobFinished.SUBJECT] == 1
        # ... and applied once each: every round in the outputs, in order, once.
        out = f"jobs/{JOB_NAME}/files_out/"
        models = f"jobs/{JOB_NAME}/model_out/"
        expected = {f"{out}metrics.json", f"{models}global_model.pt"}
        expected |= {f"{models}model_round_{r}.pt" for r in range(ROUNDS)}
        assert not run.platform.wait_for_objects(expected), "outputs missing"
        metrics = run.platform.wait_for_json(
            f"{out}metrics.json", lambda report: len(report["rounds"]) >= ROUNDS
        )
        assert [entry["round"] for entry in metrics["rounds"]] == list(range(ROUNDS))
