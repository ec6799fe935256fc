"""The CLI login profile: private on disk, overridden by RONDO_URL / RONDO_API_KEY."""

import stat
from pathlib import Path

import pytest

from rondo.profile import Profile, load_profile, profile_path, save_profile


def test_profile_is_private_and_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("RONDO_URL", raising=False)
    monkeypatch.delenv("RONDO_API_KEY", raising=False)
    assert load_profile() is None

    path = save_profile(Profile(url="http://127.0.0.1:8000", api_key="key-1"))
    assert path == profile_path() == tmp_path / "rondo" / "profile.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_profile() == Profile(url="http://127.0.0.1:8000", api_key="key-1")

    monkeypatch.setenv("RONDO_API_KEY", "key-2")
    assert load_profile() == Profile(url="http://127.0.0.1:8000", api_key="key-2")
    monkeypatch.setenv("RONDO_URL", "http://rondo.example:9000")
    assert load_profile() == Profile(url="http://rondo.example:9000", api_key="key-2")
