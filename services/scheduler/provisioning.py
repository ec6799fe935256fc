"""Per-run NVFlare provisioning: one project, one server, one client per site name, one admin.

Every run gets fresh certificates. Provisioning runs in this process through NVFlare's
provisioning API (what `nvflare provision` calls): most of its ~0.4 s is RSA key generation,
which releases the GIL, so a worker thread keeps the event loop responsive; the CLI in a
subprocess took ~1 s more, mostly starting Python and importing NVFlare. The returned startup
kits hold private keys: treat them as secrets (they live in the platform bucket only).
"""

import io
import ipaddress
import logging
import shutil
import tempfile
import zipfile
from pathlib import Path

from nvflare.lighter.constants import CtxKey
from nvflare.lighter.prov_utils import prepare_builders, prepare_packager
from nvflare.lighter.provision import prepare_project
from nvflare.lighter.provisioner import Provisioner
from pydantic import BaseModel, Field

from rondo.contracts.layout import SERVER_SITE

logger = logging.getLogger(__name__)

ORG = "rondo"
LOCAL_HOSTS = ("localhost", "127.0.0.1")


class ProvisionRequest(BaseModel):
    """What a run needs provisioned."""

    project: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    server_host: str = Field(description="Address clients dial: 'localhost' on one host")
    fed_learn_port: int = Field(ge=1, le=65535)
    admin_port: int = Field(ge=1, le=65535)
    site_names: list[str] = Field(min_length=1, description="Clients: slots plus spare names")
    admin_name: str = "admin@rondo.local"


class ProvisionedKits(BaseModel):
    """Startup kit folders of one provisioned run, by participant."""

    root: Path = Field(description="Temporary folder holding every kit; delete when done")
    server: Path
    admin: Path
    clients: dict[str, Path]


class ProvisioningError(RuntimeError):
    pass


def project_yaml(request: ProvisionRequest) -> dict[str, object]:
    """The api_version 3 project of one run.

    The server is named `server`; its certificate and the clients' target use `server_host`
    (its `default_host`), plus the loopback names so an agent on the server host can dial
    those too.
    """
    server: dict[str, object] = {
        "name": SERVER_SITE,
        "type": "server",
        "org": ORG,
        "fed_learn_port": request.fed_learn_port,
        "admin_port": request.admin_port,
        "default_host": request.server_host,
        "host_names": [h for h in LOCAL_HOSTS if h != request.server_host],
    }
    clients = [{"name": name, "type": "client", "org": ORG} for name in request.site_names]
    admin = {"name": request.admin_name, "type": "admin", "org": ORG, "role": "project_admin"}
    return {
        "api_version": 3,
        "name": request.project,
        "description": "Rondo run",
        "participants": [server, *clients, admin],
        "builders": [
            {"path": "nvflare.lighter.impl.workspace.WorkspaceBuilder"},
            {
                "path": "nvflare.lighter.impl.static_file.StaticFileBuilder",
                "args": {"config_folder": "config"},
            },
            {"path": "nvflare.lighter.impl.cert.CertBuilder"},
            {"path": "nvflare.lighter.impl.signature.SignatureBuilder"},
        ],
    }


def provision(request: ProvisionRequest, parent_dir: Path | None = None) -> ProvisionedKits:
    """Provision the run into a new temporary folder; return its kits.

    Raises ProvisioningError with NVFlare's reasons when the project is refused.
    """
    _check_host(request.server_host)
    root = Path(tempfile.mkdtemp(prefix=f"provision-{request.project}-", dir=parent_dir))
    try:
        kits = _provision_into(root / "workspace", project_yaml(request))
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return ProvisionedKits(
        root=root,
        server=kits / SERVER_SITE,
        admin=kits / request.admin_name,
        clients={name: kits / name for name in request.site_names},
    )


def _provision_into(workspace: Path, project: dict[str, object]) -> Path:
    """Provision `project` under `workspace`; the folder holding one kit per participant."""
    try:
        context = Provisioner(
            str(workspace), prepare_builders(project), prepare_packager(project)
        ).provision(prepare_project(project), logger=logger)
    except (ValueError, RuntimeError) as error:
        raise ProvisioningError(f"NVFlare refused the project: {error}") from error
    kits = context.get(CtxKey.CURRENT_PROD_DIR)
    if context.get(CtxKey.BUILD_ERROR) or not kits or not Path(kits).is_dir():
        errors = "; ".join(context.get(CtxKey.ERRORS) or []) or "see the scheduler log"
        raise ProvisioningError(f"NVFlare provisioning failed: {errors}")
    return Path(kits)


def zip_kit(kit_dir: Path) -> bytes:
    """A kit folder as zip bytes (paths relative to the kit; file modes kept, so the
    startup scripts stay executable)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(kit_dir.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(kit_dir))
    return buffer.getvalue()


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not host or any(ch in host for ch in " /:@"):
        raise ProvisioningError(f"invalid server host {host!r}")
