"""`rondo.Client`: the Python SDK. The `rondo` command is built on it (one code path).

    import rondo
    from model_def import DigitsCNN

    with rondo.Client() as client:          # the CLI's login, or RONDO_URL / RONDO_API_KEY
        job = client.submit(DigitsCNN, "shards/", rondo.TrainingConfig(num_rounds=3),
                            name="digits")
        job.wait()
        job.download_model()                # ./global_model.pt, checksum verified

Every method returns a pydantic model of `rondo.contracts.api` (or a `Job`) and raises a
`rondo.errors.RondoError` with a message and a hint on failure.
"""

import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

import httpx

from rondo.api_client import ApiClient
from rondo.bucket import Bucket, UploadReport
from rondo.contracts.api import (
    JobCreate,
    JobList,
    JobLogs,
    JobMetrics,
    JobPublic,
    WorkerList,
)
from rondo.contracts.layout import job_prefix
from rondo.contracts.states import JobState
from rondo.contracts.training import GpuRequirements, Timing, TrainingConfig
from rondo.errors import ApiError, ConnectionFailed, InvalidInput, NotLoggedIn
from rondo.job import Job
from rondo.job_folder import MIRRORED_FOLDERS, LocalJob, job_from_parts, read_job_folder
from rondo.local_checks import check_local_job
from rondo.profile import Profile, load_profile
from rondo.transfers import SilentListener, TransferListener, Transfers

MAX_PAGE = 200  # the API's largest `limit`
SUBMIT_ATTEMPTS = 3
SUBMIT_RETRY_DELAY_S = 2.0


class Submission(NamedTuple):
    """A submitted job and what its upload did."""

    job: Job
    upload: UploadReport


class Client:
    """A session with one Rondo API as one user.

    `url` and `api_key` default to the CLI's login (`rondo login`, `rondo up`), which
    `RONDO_URL` and `RONDO_API_KEY` override.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        profile = _resolve_profile(url, api_key)
        self.url = profile.url.rstrip("/")
        self.api = ApiClient(profile, transport=transport)
        self._transfers = Transfers()
        self.files = Bucket(self.api, self._transfers)

    def close(self) -> None:
        self.api.close()
        self._transfers.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- submitting -------------------------------------------------------------------

    def submit(
        self,
        model: type | str | Path,
        shards_dir: str | Path,
        config: TrainingConfig | None = None,
        *,
        name: str,
        requirements: str | Path | None = None,
        gpu: GpuRequirements | None = None,
        timing: Timing | None = None,
        listener: TransferListener | None = None,
    ) -> Job:
        """Upload a model (its class, or the path of its model_def.py), the shard ZIPs of
        `shards_dir` and an optional requirements file as `jobs/{name}/`, then submit.

        A class also names `config.model_class` unless it is set.
        """
        config = config or TrainingConfig()
        if isinstance(model, type) and config.model_class is None:
            config = config.model_copy(update={"model_class": model.__name__})
        model_ref = model if isinstance(model, type) else Path(model)
        submission = JobCreate(
            name=name, config=config, gpu=gpu or GpuRequirements(), timing=timing or Timing()
        )
        with tempfile.TemporaryDirectory(prefix="rondo-submit-") as scratch:
            if requirements is None:  # the job folder needs one, even if empty
                requirements = Path(scratch) / "requirements.txt"
                requirements.write_text("")
            local = job_from_parts(model_ref, Path(shards_dir), Path(requirements))
            return self.submit_job(local, submission, listener).job

    def submit_folder(
        self,
        folder: str | Path,
        config: TrainingConfig | None = None,
        *,
        name: str,
        gpu: GpuRequirements | None = None,
        timing: Timing | None = None,
        listener: TransferListener | None = None,
    ) -> Job:
        """Upload a job folder (see `rondo.job_folder` for its layouts) and submit it."""
        submission = JobCreate(
            name=name,
            config=config or TrainingConfig(),
            gpu=gpu or GpuRequirements(),
            timing=timing or Timing(),
        )
        return self.submit_job(read_job_folder(Path(folder)), submission, listener).job

    def submit_job(
        self,
        local: LocalJob,
        submission: JobCreate,
        listener: TransferListener | None = None,
    ) -> Submission:
        """Check the job locally (the API's own checks), upload what the bucket lacks, submit.

        Refuses with `InvalidInput` before anything is sent when a check fails, or while a
        job of the same name is active (its folder must not change under it).
        """
        check_local_job(local, submission)
        active = self._active_job_named(submission.name)
        if active is not None:
            raise InvalidInput(
                f"a job named {submission.name} is still active ({active.id}, {active.state})",
                "wait for it to finish, cancel it, or submit under another folder name",
            )
        upload = self.upload_job(submission.name, local, listener)
        return Submission(job=self.create_job(submission), upload=upload)

    def upload_job(
        self, name: str, local: LocalJob, listener: TransferListener | None = None
    ) -> UploadReport:
        """Make `jobs/{name}/` hold the job's inputs; unchanged files are not sent again."""
        prefix = job_prefix(name)
        files = {prefix + key: path for key, path in local.files.items()}
        mirrored = [prefix + folder for folder in MIRRORED_FOLDERS]
        return self.files.sync(files, mirrored, listener or SilentListener())

    def create_job(self, submission: JobCreate, idempotency_key: str | None = None) -> Job:
        """`POST /api/jobs` for files already in the bucket.

        Retried on network errors and 5xx answers with the same `Idempotency-Key`, so a
        retry never submits twice.
        """
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                view = self.api.request(
                    "POST", "/api/jobs", JobPublic, body=submission, headers=headers
                )
                return Job(self, view)
            except (ConnectionFailed, ApiError) as error:
                retryable = not isinstance(error, ApiError) or error.is_server_error
                if not retryable or attempt == SUBMIT_ATTEMPTS:
                    raise
                time.sleep(SUBMIT_RETRY_DELAY_S * attempt)
        raise AssertionError("unreachable")

    def _active_job_named(self, name: str) -> JobPublic | None:
        for state in (JobState.PENDING, JobState.RUNNING):
            for job in self.jobs(state=state, limit=MAX_PAGE).items:
                if job.name == name:
                    return job
        return None

    # --- jobs -------------------------------------------------------------------------

    def jobs(self, state: JobState | None = None, limit: int = 50, offset: int = 0) -> JobList:
        """The user's jobs, newest first."""
        params = {"state": state, "limit": limit, "offset": offset}
        return self.api.request("GET", "/api/jobs", JobList, params=params)

    def job(self, job_id: str) -> Job:
        """A handle on one job (fetched now)."""
        return Job(self, self.get_job(job_id))

    def get_job(self, job_id: str) -> JobPublic:
        return self.api.request("GET", f"/api/jobs/{job_id}", JobPublic)

    def cancel(self, job_id: str) -> JobPublic:
        return self.api.request("POST", f"/api/jobs/{job_id}/cancel", JobPublic)

    def stop(self, job_id: str) -> JobPublic:
        return self.api.request("POST", f"/api/jobs/{job_id}/stop", JobPublic)

    def metrics(self, job_id: str) -> JobMetrics:
        return self.api.request("GET", f"/api/jobs/{job_id}/metrics", JobMetrics)

    def logs(
        self,
        job_id: str,
        source: str = "server",
        *,
        tail: int | None = None,
        start: int | None = None,
    ) -> JobLogs:
        """Lines of one log of the job: `server` or `client_<n>`; the last `tail` lines, or
        from line `start` on."""
        params = {"source": source, "tail": tail, "start": start}
        return self.api.request("GET", f"/api/jobs/{job_id}/logs", JobLogs, params=params)

    def workers(self) -> WorkerList:
        """The fleet: online workers, their slots and jobs."""
        return self.api.request("GET", "/api/workers", WorkerList)

    def dashboard_link(self, job_id: str) -> str:
        return f"{self.url}/jobs/{job_id}"


def _resolve_profile(url: str | None, api_key: str | None) -> Profile:
    if url and api_key:
        return Profile(url=url, api_key=api_key)
    stored = load_profile()
    if stored is None:
        raise NotLoggedIn(
            "no Rondo API to talk to: not logged in",
            "run rondo login --url URL --api-key KEY (or rondo up), or set RONDO_URL and "
            "RONDO_API_KEY",
        )
    return Profile(url=url or stored.url, api_key=api_key or stored.api_key)
