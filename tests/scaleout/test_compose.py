"""deploy/compose: valid YAML, each Rondo service configured with settings its code reads (and
values those settings accept), and Dockerfiles and mounts naming files that exist."""

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from rondo.artifacts.config import ArtifactsSettings
from rondo.gateway.config import GatewaySettings
from rondo.scheduler.config import SchedulerSettings
from rondo.worker_agent.config import AgentSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
DOCKERFILES = sorted((REPO / "deploy" / "docker").glob("Dockerfile.*"))
SETTINGS: dict[str, type[BaseSettings]] = {
    "rondo.gateway": GatewaySettings,
    "rondo.scheduler": SchedulerSettings,
    "rondo.artifacts": ArtifactsSettings,
    "rondo.worker_agent": AgentSettings,
}
# What no Rondo service can run without.
REQUIRED = {"RONDO_NATS_URL", "RONDO_NATS_STREAM_REPLICAS", "RONDO_OTLP_ENDPOINT"}
# The platform's S3 identity: the services need it; agents must never have it (user code runs
# beside them; they get presigned URLs instead).
PLATFORM_S3 = {"RONDO_S3_ENDPOINT", "RONDO_S3_ACCESS_KEY", "RONDO_S3_SECRET_KEY"}
AGENT_MODULE = "rondo.worker_agent"
# Base images: they build no Rondo code, so they copy nothing from the repository.
BASE_DOCKERFILES = {"Dockerfile.python-base"}
# ${NAME}, ${NAME:-default}, ${NAME:?error}: compose's interpolation.
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::?(?P<op>[-?])(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text()))


def rondo_services(compose: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
    """Compose service -> (the module it runs, its environment)."""
    found = {}
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if command[:2] == ["python", "-m"] and command[2] in SETTINGS:
            found[name] = (command[2], dict(service.get("environment") or {}))
    return found


def settings_variables(settings: type[BaseSettings]) -> set[str]:
    """Every RONDO_* variable the settings class reads."""
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    names: set[str] = set()
    for field_name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str)}
        else:
            names.add(prefix + field_name.upper())
    return {name for name in names if name.startswith(prefix)}


def interpolated(value: str) -> str:
    """The value as compose would pass it: defaults filled in, other variables a placeholder."""
    return INTERPOLATION.sub(
        lambda m: m["arg"] if m["op"] == "-" else f"value-of-{m['name'].lower()}", value
    )


def test_every_rondo_service_runs_with_settings_its_code_reads(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = rondo_services(compose)
    assert {module for module, _ in services.values()} == set(SETTINGS)
    for name, (module, environment) in services.items():
        settings = SETTINGS[module]
        unknown = {key for key in environment if key.startswith("RONDO_")}
        unknown -= settings_variables(settings)
        assert not unknown, f"{name}: {module} reads no {sorted(unknown)}"
        assert set(environment) >= REQUIRED, f"{name} lacks {REQUIRED - set(environment)}"
        if module == AGENT_MODULE:
            leaked = PLATFORM_S3 & set(environment)
            assert not leaked, f"{name} must not hold the platform's S3 identity: {leaked}"
        else:
            assert set(environment) >= PLATFORM_S3, f"{name} lacks {PLATFORM_S3 - set(environment)}"
        with monkeypatch.context() as env:
            for key, value in environment.items():
                assert isinstance(value, str), f"{name}: {key} must be a string"
                env.setenv(key, interpolated(value))
            settings()  # every value is one the settings accept


def test_deployment_has_its_parts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nats_nodes = sorted(name for name in services if name.startswith("nats-"))
    assert len(nats_nodes) == 3
    for node in nats_nodes:
        args = services[node]["command"]
        routes = next(a for a in args if a.startswith("--routes="))
        assert routes == "--routes=" + ",".join(f"nats://{n}:6222" for n in nats_nodes)
        assert "--cluster_name=rondo" in args

    environments = {name: env for name, (_, env) in rondo_services(compose).items()}
    for name, env in environments.items():
        assert len(env["RONDO_NATS_URL"].split(",")) == len(nats_nodes), name
        assert env["RONDO_NATS_STREAM_REPLICAS"] == str(len(nats_nodes)), name
    for name in ("gateway", "scheduler", "artifacts"):
        url = next(v for k, v in environments[name].items() if k.endswith("DATABASE_URL"))
        assert url.startswith("postgresql+psycopg://"), name
        assert environments[name]["RONDO_OTLP_ENDPOINT"].startswith("http://jaeger:4318")

    agent = services["worker-agent"]
    devices = agent["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert services["garage-init"]["depends_on"]["garage"]
    assert "postgres" in services and "jaeger" in services


def test_builds_and_mounts_name_files_that_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (COMPOSE_DIR / build["context"]).resolve()
            assert context == REPO, f"{name}: images build from the repository root"
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (COMPOSE_DIR / source).exists(), f"{name} mounts missing {source}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfiles_copy_files_that_exist(dockerfile: Path) -> None:
    copies = 0
    for line in dockerfile.read_text().splitlines():
        if line.split(maxsplit=1)[:1] not in (["COPY"], ["ADD"]):
            continue
        words = shlex.split(line)
        if any(word.startswith("--from=") for word in words):
            continue  # from another build stage
        *sources, _destination = [word for word in words[1:] if not word.startswith("--")]
        for source in sources:
            if any(char in source for char in "*?["):
                # A pattern may match nothing on purpose (`node_module[s]`: copied when there).
                parent = (REPO / source).parent
                assert parent.is_dir(), f"{dockerfile.name} copies from missing {parent}"
            else:
                assert (REPO / source).exists(), f"{dockerfile.name} copies missing {source}"
            copies += 1
    if dockerfile.name not in BASE_DOCKERFILES:
        assert copies, f"{dockerfile.name} copies nothing from the repository"
