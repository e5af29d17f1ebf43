"""The exception tree of relay.

Every exception relay raises on purpose derives from ``RelayError``::

    RelayError
    ├── ConfigError               rules.yaml / templates are invalid (carries every Diagnostic)
    ├── SettingsError             a RELAY_* environment variable is malformed
    ├── TemplateError             a template failed to compile or render (permanent for a delivery)
    ├── VerificationError         an inbound request failed signature / shape checks (-> 4xx)
    │   └── EventShapeError       signed, but not events its source understands (-> 400)
    ├── StoreError                the durable store failed
    │   └── StoreUnavailableError the store cannot commit right now (-> 503 at ingest)
    └── DeliveryError             a sink could not deliver one message
        ├── RetryableError        try again later (timeouts, 408, 429, 5xx); may carry retry_after_s
        └── PermanentError        never succeeds as is (other 4xx, invalid payload) -> dead letter
            └── PayloadError      a rendered payload the provider refuses; ``path`` locates it

Foreign exceptions (httpx, resend, sqlite3, svix, jinja2) are translated at the boundary where they
happen, with ``raise ... from exc``, so callers only ever handle this tree.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class RelayError(Exception):
    """Base class of every error relay raises deliberately."""


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One located problem in a config file: ``file:line:col: message``."""

    file: str
    line: int
    col: int
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else "warning: "
        message = self.message.replace("\r", "\\r").replace("\n", "\\n")  # one line each
        return f"{self.file}:{self.line}:{self.col}: {prefix}{message}"


class ConfigError(RelayError):
    """The configuration is invalid; ``diagnostics`` lists every problem found."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))


class SettingsError(RelayError):
    """A ``RELAY_*`` environment variable has a value relay cannot use."""


class TemplateError(RelayError):
    """A template failed to compile or render; ``file``/``line`` locate it when known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        super().__init__(f"{file}:{line}: {message}" if file else message)


class VerificationError(RelayError):
    """An inbound webhook failed verification or is malformed; answered with a 4xx."""


class EventShapeError(VerificationError):
    """A correctly signed request whose body is not what its source expects (not JSON, no type).

    ``reason`` is a short code for metrics and logs (``bad_json``, ``no_type``, ``bad_event``).
    """

    def __init__(self, message: str, *, reason: str = "bad_event") -> None:
        super().__init__(message)
        self.reason = reason


class StoreError(RelayError):
    """The durable store failed."""


class StoreUnavailableError(StoreError):
    """The store cannot commit right now; ingest answers 503 so the sender retries."""


class DeliveryError(RelayError):
    """A sink failed to deliver a message. ``status`` is the upstream HTTP status, if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableError(DeliveryError):
    """A transient failure: the delivery is retried, no sooner than ``retry_after_s`` if given."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class PermanentError(DeliveryError):
    """A failure that retrying cannot fix: the delivery is dead-lettered with this reason."""


class PayloadError(PermanentError):
    """A rendered message its provider would refuse (Slack blocks that Slack rejects, say).
    ``path`` locates the part at fault in the payload (``("blocks", 0, "text", "type")``), so
    that ``relay check`` can point at the template line that rendered it."""

    def __init__(self, message: str, *, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string: for error texts
    about names people mistype."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
