"""Every error the service raises on purpose, in one flat module."""

from __future__ import annotations


class ConfigError(Exception):
    """A ``FASTAGENTIC_*`` setting holds a value the service cannot use.

    The message is one line naming the variable, meant to be shown as is.
    """


class BackendUnavailable(Exception):
    """A configured Redis or Postgres cannot be reached (at start, or now).

    ``check`` names the backend the way /ready does ("redis", "postgres"), so a
    503 can say which one is down; None when it is not known.
    """

    def __init__(self, message: str, check: str | None = None) -> None:
        super().__init__(message)
        self.check = check


class LLMError(Exception):
    """The language model failed to answer; the task may be retried."""


class CircuitOpen(LLMError):
    """The LLM endpoint failed too often recently; calls fail fast until it cools down."""


class HTTPError(Exception):
    """An HTTP error answered with the uniform JSON body ``{"error", "message", "error_id"}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []
        self.extra = extra or {}
