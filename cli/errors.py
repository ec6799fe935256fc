"""What the SDK raises: every error carries a message and a hint that says what to fix.

The CLI maps these classes to its exit codes (`rondo.cli_support`); SDK users catch
`RondoError` or one of its kinds.
"""

from rondo.contracts.api import ErrorBody
from rondo.contracts.job_checks import Problem


class RondoError(Exception):
    """Base of every SDK error; `problems` lists each fault of a refused job folder."""

    def __init__(self, message: str, hint: str = "", problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.problems = problems or []


class ApiError(RondoError):
    """The API answered with an error envelope (`ErrorBody`)."""

    def __init__(self, status_code: int, body: ErrorBody) -> None:
        super().__init__(body.message, body.hint, body.problems)
        self.status_code = status_code
        self.code = body.code

    @property
    def is_auth_error(self) -> bool:
        return self.status_code in (401, 403)

    @property
    def is_server_error(self) -> bool:
        return self.status_code >= 500


class ConnectionFailed(RondoError):
    """The API or the object store could not be reached, or a transfer broke off."""


class NotLoggedIn(RondoError):
    """No API URL or key: neither a stored profile nor RONDO_URL / RONDO_API_KEY."""


class InvalidInput(RondoError):
    """Local input the platform would refuse (job folder, shards, options); nothing was sent."""


class ChecksumMismatch(RondoError):
    """A downloaded file does not match the checksum the object store holds for it."""


class OutputsPending(RondoError):
    """The job ended, but the platform has not finished writing its outputs in time."""
