"""Liveness: `GET /healthz` (no auth). Bus health is `rondo.health.gateway` (see app.py)."""

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


@router.get("/healthz")
def healthz() -> Health:
    """The process is up and serving HTTP."""
    return Health()
