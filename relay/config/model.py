"""What ``rules.yaml`` says (pydantic models of the file) and what a load makes of it (the
validated, compiled ``Config`` that ``relay serve`` runs and ``relay check`` vouches for).

The file models (``RulesFileModel``, ``RuleModel``, ``SendModel``, and the workflow keys
``WindowModel``, ``DigestModel``, ``ThrottleModel``) only check shapes; the loader
(``relay.config.loader``) validates the rest and builds the specs: ``SourceSpec`` (a source's type
and settings; ``build`` makes its verifier), ``SinkSpec`` (a sink's type and settings) and the
compiled rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relay.config.durations import Duration, format_duration, within
from relay.errors import Diagnostic
from relay.recipients.links import UnsubscribeLinks
from relay.rules import Rule
from relay.sinks.base import SinkSettings, SinkType
from relay.sources import base as sources
from relay.sources.base import SourceSettings, SourceType
from relay.workflow.windows import parse_days, parse_hours

Mode = Literal["check", "serve", "dry-run"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MAX_DELAY = "365d"
Delay = Annotated[Duration, within("0s", MAX_DELAY)]
Span = Annotated[Duration, within("1s", MAX_DELAY)]


class WindowModel(_Model):
    """A ``window:``: the days and hours a send may go out, in a time zone (a name, or a
    template naming the event's, with ``default_timezone`` when it names none)."""

    days: str | list[str] = "mon-sun"
    hours: str = "00:00-24:00"
    timezone: str = "UTC"
    default_timezone: str = "UTC"

    @field_validator("days")
    @classmethod
    def _days(cls, value: str | list[str]) -> str | list[str]:
        parse_days(value)
        return value

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        parse_hours(value)
        return value


class DigestModel(_Model):
    window: Span
    max: int = Field(100, ge=1, le=1000)
    key: str | None = None
    first: Literal["digest", "now"] = "digest"


class ThrottleModel(_Model):
    key: str
    max: int = Field(1, ge=1, le=1000)
    per: Span


class SendModel(BaseModel):
    """One ``send:`` entry; keys other than ``sink``, ``template``, ``delay``, ``window`` and
    ``unsubscribe`` are the sink's send fields."""

    model_config = ConfigDict(extra="allow", frozen=True)
    sink: str
    template: str | None = None
    delay: Delay | None = None
    window: WindowModel | None = None
    unsubscribe: str | Literal[False] | None = None  # a category; false: none (transactional)


class RuleModel(_Model):
    name: str
    events: str | list[str]
    when: str | None = None
    send: list[SendModel] = Field(min_length=1)
    delay: Delay | None = None
    window: WindowModel | None = None
    cancel_on: str | list[str] | None = None
    key: str | None = None
    digest: DigestModel | None = None
    once: str | None = None
    throttle: ThrottleModel | None = None
    unsubscribe: str | None = None  # the category of its emails (relay.config.unsubscribe)


MIN_RETENTION_S = 28 * 3600.0  # Svix retries a message for up to ~28 h: dedup must outlive it
DEFAULT_RETENTION_S = 30 * 86400.0


class RetentionModel(_Model):
    """``retention:``: how long delivered and dead history is kept (events, with their
    deliveries and attempts). Pending work is kept whatever its age."""

    events: Duration = DEFAULT_RETENTION_S

    @field_validator("events")
    @classmethod
    def _at_least_the_dedup_window(cls, value: float) -> float:
        if value < MIN_RETENTION_S:
            raise ValueError(
                f"{format_duration(value)} is shorter than 28h: Svix retries a message for up to"
                " ~28 h, and a purged event's retry would be accepted as new"
            )
        return value


class RulesFileModel(_Model):
    version: Literal[1] = 1
    sources: dict[str, dict[str, Any]] = Field(min_length=1)
    sinks: dict[str, dict[str, Any]]
    rules: list[RuleModel]
    retention: RetentionModel = RetentionModel()


@dataclass(frozen=True)
class SourceSpec:
    """A configured source: its type and validated settings; ``build`` makes the ready verifier.

    ``complete`` is False only under ``relay check`` when one of its ${VARS} is unset: the settings
    were taken as written (for the summary and send-test's message) and it cannot be built.
    """

    name: str
    path: str
    type: SourceType
    settings: SourceSettings
    max_body_bytes: int
    complete: bool = True

    def build(self, clock: Callable[[], float]) -> sources.Source:
        assert self.complete, f"source '{self.name}' has unset variables"
        return self.type.build(self.settings, sources.SourceContext(clock=clock))


@dataclass(frozen=True)
class SinkSpec:
    name: str
    type: SinkType
    settings: SinkSettings


@dataclass(frozen=True)
class Config:
    """A validated, compiled configuration: what ``serve`` runs and ``check`` vouches for."""

    sources: Mapping[str, SourceSpec]
    sinks: Mapping[str, SinkSpec]
    rules: tuple[Rule, ...]
    warnings: tuple[Diagnostic, ...] = ()
    secret_values: frozenset[str] = field(default_factory=frozenset, repr=False)
    """Every secret in the config (signing secrets, API keys, URLs with tokens), for redaction."""
    retention_s: float = DEFAULT_RETENTION_S
    """How long delivered and dead history is kept (``retention.events``)."""
    unsubscribe: UnsubscribeLinks | None = None
    """The one-click unsubscribe links, when their secret is set (``relay.config.unsubscribe``)."""
