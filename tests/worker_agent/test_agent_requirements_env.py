"""Per-job Python envs: cached by the requirements file's hash, never reinstalling the base."""

import subprocess
import sys
from pathlib import Path

import pytest
import six

from rondo.worker_agent.requirements_env import RequirementsEnvs, RequirementsError


async def test_empty_or_absent_requirements_use_the_base_interpreter(tmp_path: Path) -> None:
    envs = RequirementsEnvs(tmp_path / "envs", timeout_s=60)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing needed\n\n")
    assert (await envs.python_for(requirements)).python == sys.executable
    assert (await envs.python_for(tmp_path / "absent.txt")).python == sys.executable
    assert (await envs.python_for(None)).python == sys.executable
    assert not (tmp_path / "envs").exists()


async def test_env_is_cached_by_hash_and_base_packages_are_not_reinstalled(tmp_path: Path) -> None:
    envs = RequirementsEnvs(tmp_path / "envs", timeout_s=120)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"six=={six.__version__}\n")

    first = await envs.python_for(requirements)
    assert not first.reused and first.python != sys.executable
    env_dir = Path(first.python).parent.parent
    assert env_dir.name == first.requirements_sha256
    # six comes from the base env: nothing was installed into the job's env.
    assert not list(env_dir.glob("lib/python*/site-packages/six*"))
    pip_log = (tmp_path / "envs" / f"{first.requirements_sha256}.pip.log").read_text()
    assert "Requirement already satisfied: six" in pip_log

    again = await envs.python_for(requirements)
    assert again.reused and again.python == first.python

    probe = (
        "import importlib.util as u, six; "
        "print(all(u.find_spec(m) for m in ('torch', 'nvflare', 'rondo.contracts')), six.__file__)"
    )
    out = subprocess.run([first.python, "-c", probe], capture_output=True, text=True, check=True)
    found_all, six_file = out.stdout.split()
    assert found_all == "True"
    assert Path(six_file).resolve() == Path(six.__file__).resolve()


async def test_failed_install_reports_pip_output(tmp_path: Path) -> None:
    envs = RequirementsEnvs(tmp_path / "envs", timeout_s=60)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("--this-is-not-a-pip-option\n")
    with pytest.raises(RequirementsError) as failed:
        await envs.python_for(requirements)
    assert "installing requirements.txt failed" in str(failed.value)
    assert "no such option" in str(failed.value)
