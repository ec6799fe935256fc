"""Job rows: lookups scoped to their owner, creation of a submitted job, its bus event.

Every lookup takes the user's id: another user's job is indistinguishable from a missing one.
"""

from sqlalchemy import func
from sqlmodel import Session, col, select

from rondo.contracts.api import JobCreate
from rondo.contracts.events import JobSubmitted
from rondo.contracts.states import JobState
from rondo.contracts.training import TrainingConfig
from rondo.gateway.models import ACTIVE_STATES, Job, JobRound, JobTransition, User
from rondo.gateway.validation import JobFolder


def get_user_job(session: Session, user_id: str, job_id: str) -> Job | None:
    job = session.get(Job, job_id)
    return job if job is not None and job.user_id == user_id else None


def user_job_ids(session: Session, user_id: str, job_ids: set[str]) -> set[str]:
    """Those of `job_ids` that belong to the user."""
    if not job_ids:
        return set()
    statement = select(Job.id).where(Job.user_id == user_id, col(Job.id).in_(job_ids))
    return set(session.exec(statement).all())


def find_by_idempotency_key(session: Session, user_id: str, key: str) -> Job | None:
    statement = select(Job).where(Job.user_id == user_id, Job.idempotency_key == key)
    return session.exec(statement).first()


def active_job_named(session: Session, user_id: str, name: str) -> Job | None:
    statement = select(Job).where(
        Job.user_id == user_id, Job.name == name, col(Job.state).in_(ACTIVE_STATES)
    )
    return session.exec(statement).first()


def list_user_jobs(
    session: Session, user_id: str, state: JobState | None, limit: int, offset: int
) -> tuple[list[Job], int]:
    """The user's jobs, newest first, and how many match in total."""
    conditions = [Job.user_id == user_id]
    if state is not None:
        conditions.append(Job.state == state)
    total = session.exec(select(func.count()).select_from(Job).where(*conditions)).one()
    statement = (
        select(Job)
        .where(*conditions)
        .order_by(col(Job.created_at).desc(), col(Job.id).desc())
        .offset(offset)
        .limit(limit)
    )
    return list(session.exec(statement).all()), int(total)


def create_submitted_job(
    session: Session,
    user: User,
    submission: JobCreate,
    folder: JobFolder,
    idempotency_key: str | None,
) -> Job:
    """Store the job PENDING with its first transition and its `job.submitted` (the outbox the
    gateway hands it over from, see `rondo.gateway.submissions`), and commit.

    `min_clients` defaults to the number of shards, so the stored config is the one that runs.
    Raises `sqlalchemy.exc.IntegrityError` when an active job already has this name or the
    idempotency key is taken (concurrent submissions); the session is then rolled back.
    """
    config = submission.config
    if config.min_clients is None:
        config = config.model_copy(update={"min_clients": len(folder.shard_keys)})
    job = Job(
        user_id=user.id,
        name=submission.name,
        bucket=user.bucket,
        files_prefix=folder.prefix,
        state=JobState.PENDING,
        num_rounds=config.num_rounds,
        config=config.model_dump(mode="json"),
        gpu=submission.gpu.model_dump(mode="json"),
        timing=submission.timing.model_dump(mode="json"),
        idempotency_key=idempotency_key,
    )
    job.transitions = [JobTransition(state=JobState.PENDING, at=job.created_at)]
    job.submitted_event = job_submitted_event(user, job, folder, submission).model_dump(mode="json")
    session.add(job)
    try:
        session.commit()
    except Exception:
        session.rollback()
        raise
    session.refresh(job)
    return job


def job_submitted_event(
    user: User, job: Job, folder: JobFolder, submission: JobCreate
) -> JobSubmitted:
    """The event that hands a stored job to the scheduler."""
    return JobSubmitted(
        job_id=job.id,
        user_id=user.id,
        bucket=job.bucket,
        name=job.name,
        prefix=folder.prefix,
        shard_keys=folder.shard_keys,
        has_custom_app=folder.has_custom_app,
        warm_start_key=folder.warm_start_key,
        config=TrainingConfig.model_validate(job.config),
        gpu=submission.gpu,
        timing=submission.timing,
    )


def latest_rounds(session: Session, job_id: str) -> list[JobRound]:
    """One row per round, in round order; when runs repeat a round, the latest run wins."""
    statement = (
        select(JobRound)
        .where(JobRound.job_id == job_id)
        .order_by(col(JobRound.round), col(JobRound.completed_at), col(JobRound.id))
    )
    by_round: dict[int, JobRound] = {}
    for row in session.exec(statement):
        by_round[row.round] = row
    return list(by_round.values())
