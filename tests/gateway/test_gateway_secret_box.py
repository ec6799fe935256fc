"""Users' S3 secrets at rest: sealed with the configured key (or the data dir's key file),
opened only with it; secrets stored before sealing existed are sealed when the gateway starts."""

import stat

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine
from sqlmodel import Session, select

from rondo.gateway.config import GatewaySettings
from rondo.gateway.models import User, UserS3Key
from rondo.gateway.secret_box import (
    KEY_FILE,
    SEALED_PREFIX,
    SecretBox,
    SecretKeyError,
    load_secret_box,
    seal_unsealed_secrets,
)

SECRET = "0123456789abcdef0123456789abcdef01234567"


def test_a_sealed_secret_opens_with_its_key_only() -> None:
    box = SecretBox(Fernet.generate_key())
    sealed = box.seal(SECRET)

    assert sealed.startswith(SEALED_PREFIX) and SECRET not in sealed
    assert box.open(sealed) == SECRET
    assert box.open(SECRET) == SECRET, "a value stored before sealing reads as is"
    with pytest.raises(SecretKeyError, match="does not open with this secrets key"):
        SecretBox(Fernet.generate_key()).open(sealed)
    with pytest.raises(SecretKeyError, match="32 url-safe base64-encoded bytes"):
        SecretBox("not-a-key")


def test_the_key_is_the_configured_one_else_a_private_key_file(settings: GatewaySettings) -> None:
    made = load_secret_box(settings)
    key_file = settings.data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_secret_box(settings).open(made.seal(SECRET)) == SECRET, "the file is reused"

    key = Fernet.generate_key().decode()
    configured = load_secret_box(settings.model_copy(update={"gateway_secrets_key": key}))
    assert SecretBox(key).open(configured.seal(SECRET)) == SECRET


def test_secrets_stored_unsealed_are_sealed_at_start(
    settings: GatewaySettings, engine: Engine
) -> None:
    with Session(engine) as session:
        user = User(name="ivy", bucket="ivy-bucket")
        session.add(user)
        session.flush()
        session.add(UserS3Key(user_id=user.id, access_key_id="GKivy", secret_access_key=SECRET))
        session.commit()
    box = load_secret_box(settings)

    assert seal_unsealed_secrets(engine, box) == 1
    assert seal_unsealed_secrets(engine, box) == 0

    with Session(engine) as session:
        [row] = session.exec(select(UserS3Key)).all()
        assert row.secret_access_key.startswith(SEALED_PREFIX)
        assert box.open(row.secret_access_key) == SECRET
