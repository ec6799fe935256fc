"""The CLI's login: which Rondo API to talk to, with which API key.

Stored in `$XDG_CONFIG_HOME/rondo/profile.json` (default `~/.config/rondo/profile.json`), mode
0600. `RONDO_URL` and `RONDO_API_KEY` in the environment override what is stored.
"""

import os
from pathlib import Path

from pydantic import BaseModel

URL_ENV = "RONDO_URL"
API_KEY_ENV = "RONDO_API_KEY"


class Profile(BaseModel):
    url: str
    api_key: str


def profile_path() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "rondo" / "profile.json"


def save_profile(profile: Profile, path: Path | None = None) -> Path:
    """Write the profile (mode 0600, its folder 0700); returns where it went."""
    path = path or profile_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(profile.model_dump_json(indent=2))
    os.chmod(path, 0o600)
    return path


def load_profile(path: Path | None = None) -> Profile | None:
    """The stored profile with environment overrides applied; None when neither gives both
    a URL and an API key."""
    path = path or profile_path()
    stored: dict[str, str] = {}
    if path.exists():
        stored = Profile.model_validate_json(path.read_text(encoding="utf-8")).model_dump()
    url = os.environ.get(URL_ENV) or stored.get("url")
    api_key = os.environ.get(API_KEY_ENV) or stored.get("api_key")
    if not url or not api_key:
        return None
    return Profile(url=url, api_key=api_key)
