"""Creating a run: provision NVFlare, upload the startup kits, presign, build `JobDispatched`.

A run is one NVFlare federation of a job: a server, one client per slot (site names
`site-<slot>-<generation>`, plus spare names for replacements) and an admin, freshly
provisioned. Every kit goes to the platform bucket under `kits/<job_id>/<run_id>/<name>.zip`;
agents get presigned GET URLs (1 hour) for their kits, the job's files (`scripts/`,
`configs/`, `requirements/`, `model/`) and each client's shard. Nothing here touches the store
or the bus: the caller commits the `RunPlan` and its events together.

Calls are blocking (S3, NVFlare provisioning): run them in a worker thread.
"""

import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol
from uuid import uuid4

from botocore.exceptions import ClientError

from rondo.contracts.events import (
    ClientAssignment,
    JobDispatched,
    JobFile,
    JobSubmitted,
    ServerAssignment,
    WorkerHeartbeat,
)
from rondo.contracts.layout import JOB_FILE_FOLDERS, MODEL_DIR, SERVER_SITE, flare_client_site
from rondo.contracts.storage import PRESIGNED_GET_SECONDS, S3Client, is_not_found
from rondo.scheduler import provisioning
from rondo.scheduler.checkpoints import ResumePoint, find_resume_point
from rondo.scheduler.models import RunCreate, RunSlotCreate
from rondo.scheduler.placement import Placement
from rondo.scheduler.provisioning import ProvisionedKits, ProvisionRequest

logger = logging.getLogger(__name__)

ADMIN_NAME = "admin@rondo.local"


class Provisioner(Protocol):
    """Makes the startup kits of a run (`rondo.scheduler.provisioning` in production)."""

    def provision(self, request: ProvisionRequest, parent_dir: Path) -> ProvisionedKits: ...

    def zip_kit(self, kit_dir: Path) -> bytes: ...


class NvflareProvisioner:
    """NVFlare provisioning through `rondo.scheduler.provisioning`."""

    def provision(self, request: ProvisionRequest, parent_dir: Path) -> ProvisionedKits:
        return provisioning.provision(request, parent_dir)

    def zip_kit(self, kit_dir: Path) -> bytes:
        return provisioning.zip_kit(kit_dir)


class RunCreator(Protocol):
    """What the scheduler needs of run creation (`Dispatcher`; tests may stand in for it)."""

    def create_run(
        self,
        job: JobSubmitted,
        placement: Placement,
        agents: Mapping[str, WorkerHeartbeat],
        *,
        generations: Mapping[int, int] | None = None,
        start_round: int = 0,
        initial_checkpoint_key: str | None = None,
    ) -> "RunPlan": ...

    def resume_point(self, job: JobSubmitted, completed_rounds: int, wait_s: float) -> ResumePoint:
        """Where a replacement run of `job` starts (`rondo.scheduler.checkpoints`)."""
        ...


class MissingObjectError(Exception):
    """An object the job needs is not in the bucket; the message names the exact key."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"Missing file: s3://{bucket}/{key} does not exist")
        self.bucket = bucket
        self.key = key


@dataclass(frozen=True)
class RunPlan:
    """A run ready to commit: its row, its slots and one dispatch event per agent."""

    run: RunCreate
    slots: list[RunSlotCreate]
    dispatches: list[JobDispatched]

    @classmethod
    def build(
        cls,
        job: JobSubmitted,
        placement: Placement,
        run_id: str,
        server: ServerAssignment,
        clients: list[ClientAssignment],
        *,
        server_host: str,
        created_at: datetime,
    ) -> "RunPlan":
        """The plan of a run whose assignments are made: `clients` in `placement.clients`
        order, the server's going to `placement.server_agent_id`."""
        dispatches = [
            JobDispatched(
                job_id=job.job_id,
                agent_id=agent_id,
                run_id=run_id,
                server=server if agent_id == placement.server_agent_id else None,
                clients=[
                    c
                    for c, p in zip(clients, placement.clients, strict=True)
                    if p.agent_id == agent_id
                ],
                server_host=server_host,
            )
            for agent_id in placement.agents
        ]
        run = RunCreate(
            run_id=run_id,
            job_id=job.job_id,
            server_agent_id=placement.server_agent_id,
            server_host=server_host,
            fed_learn_port=placement.fed_learn_port,
            admin_port=placement.admin_port,
            admin_name=server.admin_name,
            start_round=server.start_round,
            kits_prefix=f"kits/{job.job_id}/{run_id}/",
            created_at=created_at,
        )
        slots = [
            RunSlotCreate(
                run_id=run_id,
                slot=choice.slot,
                job_id=job.job_id,
                site_name=client.site_name,
                generation=client.generation,
                agent_id=choice.agent_id,
                device_index=choice.device_index,
                device=choice.device,
            )
            for choice, client in zip(placement.clients, clients, strict=True)
        ]
        return cls(run=run, slots=slots, dispatches=dispatches)


def new_run_id() -> str:
    return f"run-{uuid4().hex[:16]}"


def kit_key(job_id: str, run_id: str, name: str) -> str:
    return f"kits/{job_id}/{run_id}/{name}.zip"


class Dispatcher:
    def __init__(
        self,
        s3: S3Client,
        platform_bucket: str,
        work_dir: Path,
        clock: Callable[[], datetime],
        provisioner: Provisioner | None = None,
        spare_sites_per_slot: int = 2,
    ) -> None:
        self._s3 = s3
        self._platform_bucket = platform_bucket
        self._work_dir = work_dir
        self._clock = clock
        self._provisioner = provisioner or NvflareProvisioner()
        self._spares = spare_sites_per_slot
        self._bucket_ready = False

    def create_run(
        self,
        job: JobSubmitted,
        placement: Placement,
        agents: Mapping[str, WorkerHeartbeat],
        *,
        generations: Mapping[int, int] | None = None,
        start_round: int = 0,
        initial_checkpoint_key: str | None = None,
    ) -> RunPlan:
        """Provision, upload and presign one run of `job` as placed.

        `generations` (slot -> generation, default 0) name the sites; a replacement run passes
        the next generation of the replaced slots, `start_round` and the checkpoint to resume
        from (a key of the job's bucket). Raises `MissingObjectError` for a missing shard or
        checkpoint.
        """
        generations = generations or {}
        checkpoint_key = initial_checkpoint_key or self._warm_start_key(job)
        for key in [*job.shard_keys, *([checkpoint_key] if checkpoint_key else [])]:
            self._require(job.bucket, key)

        run_id = new_run_id()
        server_host = agents[placement.server_agent_id].host
        sites = {
            c.slot: flare_client_site(c.slot, generations.get(c.slot, 0)) for c in placement.clients
        }
        spares = [
            flare_client_site(c.slot, generations.get(c.slot, 0) + extra)
            for c in placement.clients
            for extra in range(1, self._spares + 1)
        ]
        request = ProvisionRequest(
            project=run_id,
            server_host=server_host,
            fed_learn_port=placement.fed_learn_port,
            admin_port=placement.admin_port,
            site_names=[*sites.values(), *spares],
            admin_name=ADMIN_NAME,
        )
        kit_urls = self._provision_and_upload(job.job_id, run_id, request)

        job_files = self._job_files(job)
        server = ServerAssignment(
            kit_url=kit_urls[SERVER_SITE],
            admin_kit_url=kit_urls[ADMIN_NAME],
            admin_name=ADMIN_NAME,
            fed_learn_port=placement.fed_learn_port,
            admin_port=placement.admin_port,
            site_names=[sites[slot] for slot in sorted(sites)],
            start_round=start_round,
            initial_checkpoint_url=(
                self._presign(job.bucket, checkpoint_key) if checkpoint_key else None
            ),
            job_files=job_files,
            has_custom_app=job.has_custom_app,
            config=job.config,
            timing=job.timing,
        )
        clients = [
            ClientAssignment(
                slot=choice.slot,
                site_name=sites[choice.slot],
                generation=generations.get(choice.slot, 0),
                kit_url=kit_urls[sites[choice.slot]],
                shard_key=job.shard_keys[choice.slot],
                shard_url=self._presign(job.bucket, job.shard_keys[choice.slot]),
                job_files=job_files,
                device=choice.device,
                gpu_index=None if choice.device == "cpu" else choice.device_index,
            )
            for choice in placement.clients
        ]
        return RunPlan.build(
            job,
            placement,
            run_id,
            server,
            clients,
            server_host=server_host,
            created_at=self._clock(),
        )

    def resume_point(self, job: JobSubmitted, completed_rounds: int, wait_s: float) -> ResumePoint:
        """After the last of `completed_rounds` whose checkpoint is in the job's bucket."""
        return find_resume_point(self._s3, job.bucket, job.prefix, completed_rounds, wait_s)

    # --- Kits --------------------------------------------------------------------------------

    def _provision_and_upload(
        self, job_id: str, run_id: str, request: ProvisionRequest
    ) -> dict[str, str]:
        """Provision, upload every kit (spares too), delete the local copies; presigned URLs."""
        self._work_dir.mkdir(parents=True, exist_ok=True)
        kits = self._provisioner.provision(request, self._work_dir)
        try:
            folders = {
                SERVER_SITE: kits.server,
                request.admin_name: kits.admin,
                **kits.clients,
            }
            self._ensure_platform_bucket()
            urls: dict[str, str] = {}
            for name, folder in folders.items():
                key = kit_key(job_id, run_id, name)
                self._s3.put_object(
                    Bucket=self._platform_bucket,
                    Key=key,
                    Body=self._provisioner.zip_kit(folder),
                    ContentType="application/zip",
                )
                urls[name] = self._presign(self._platform_bucket, key)
            return urls
        finally:
            shutil.rmtree(kits.root, ignore_errors=True)

    def _ensure_platform_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            self._s3.head_bucket(Bucket=self._platform_bucket)
        except ClientError:
            logger.info("creating the platform bucket %s", self._platform_bucket)
            self._s3.create_bucket(Bucket=self._platform_bucket)
        self._bucket_ready = True

    # --- The user's objects ------------------------------------------------------------------

    def _job_files(self, job: JobSubmitted) -> list[JobFile]:
        """Every object under the job's downloadable folders, with its relative path."""
        files: list[JobFile] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=job.bucket, Prefix=job.prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                relative = key.removeprefix(job.prefix)
                if key.endswith("/") or not relative.startswith(JOB_FILE_FOLDERS):
                    continue
                files.append(JobFile(path=relative, url=self._presign(job.bucket, key)))
        return sorted(files, key=lambda file: file.path)

    @staticmethod
    def _warm_start_key(job: JobSubmitted) -> str | None:
        key = job.warm_start_key
        if not key or key.startswith(job.prefix):
            return key
        return job.prefix + (key if key.startswith(MODEL_DIR) else MODEL_DIR + key)

    def _require(self, bucket: str, key: str) -> None:
        try:
            self._s3.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if is_not_found(error):
                raise MissingObjectError(bucket, key) from error
            raise

    def _presign(self, bucket: str, key: str) -> str:
        return self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=PRESIGNED_GET_SECONDS
        )
