"""The studio's view of a project: ``rules.yaml``, the templates and the sample events, loaded as
``relay check`` loads them and reloaded whenever one of the files changes; each event rendered
through ``preview`` (every rule: matched, or why not; every send, drawn by ``exhibits``).

Events come from the samples folder, from the page (pasted or dropped: kept in this process
only, the last ``MAX_PASTED``) and, with a database, from the delivery log by id (read through
``DeliveryLog.get_event``, never written). Nothing is ever sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.config import Config, load_config
from relay.config.samples import (
    PreviewRule,
    PreviewSend,
    Sample,
    load_samples,
    parse_event,
    preview,
)
from relay.delivery.snapshot import redacted
from relay.errors import ConfigError, Diagnostic
from relay.reload import fingerprint, stats
from relay.settings import Settings
from relay.studio.exhibits import Exhibit, exhibit

__all__ = ["MAX_PASTED", "Loaded", "Shown", "Workspace"]

MAX_PASTED = 20
MAX_EVENT_BYTES = 1024 * 1024
# The fields of preview's results the page draws itself; any other (a newer preview's) is
# listed as it is, so what preview learns to say shows here too.
DRAWN_RULE = frozenset({"rule", "matched", "reason", "sends"})
DRAWN_SEND = frozenset({"sink", "sink_type", "payload", "lines", "error", "index"})


@dataclass(frozen=True)
class Loaded:
    """The project as the files were at ``fingerprint``: the config (None when invalid), the
    problems to show (every located error, else the warnings) and the sample events."""

    fingerprint: str
    config: Config | None
    problems: Sequence[Diagnostic]
    samples: Sequence[Sample]


@dataclass(frozen=True)
class SendView:
    send: PreviewSend
    exhibit: Exhibit
    extras: list[tuple[str, str]]


@dataclass(frozen=True)
class RuleView:
    result: PreviewRule
    sends: list[SendView]
    extras: list[tuple[str, str]]


@dataclass(frozen=True)
class Shown:
    """One event on the page: where it came from, and what each rule does with it."""

    key: str  # sample:NAME, pasted:N or stored:ID
    title: str
    event: Mapping[str, Any] | None
    problem: str | None = None
    rules: list[RuleView] = field(default_factory=list)
    shown_event: Any = None  # the event as the page prints it: known secrets redacted


@dataclass
class Workspace:
    settings: Settings
    pasted: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    _loaded: Loaded | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fingerprint(self) -> str:
        """Changes whenever rules.yaml, a template or a sample changes (name, mtime, size)."""
        folder = self.settings.samples_dir
        samples = sorted(folder.glob("*.json")) if folder.is_dir() else []
        files = fingerprint(self.settings) + stats(samples)
        return hashlib.sha256(repr(files).encode()).hexdigest()[:16]

    def loaded(self) -> Loaded:
        """The project as it is now (loaded again only when a file changed)."""
        now = self.fingerprint()
        with self._lock:
            if self._loaded is None or self._loaded.fingerprint != now:
                self._loaded = self._load(now)
            return self._loaded

    def _load(self, now: str) -> Loaded:
        settings = self.settings
        samples, problems = load_samples(settings.samples_dir)
        try:
            config = load_config(settings.rules_path, settings.templates_dir, mode="check")
        except ConfigError as exc:
            errors = [d for d in exc.diagnostics if d.severity == "error"]
            return Loaded(now, None, errors + problems, samples)
        return Loaded(now, config, problems + list(config.warnings), samples)

    def paste(self, text: str) -> tuple[str | None, Diagnostic | None]:
        """Keep a pasted event; its key, or a located reason it is not an event."""
        event, problem = parse_event(text, "pasted event")
        if event is None:
            return None, problem
        number = max((int(k) for k in self.pasted), default=0) + 1
        self.pasted[str(number)] = event
        for old in list(self.pasted)[:-MAX_PASTED]:
            del self.pasted[old]
        return f"pasted:{number}", None

    def events(self, loaded: Loaded) -> list[tuple[str, str, Mapping[str, Any]]]:
        """(key, title, event) of every sample and pasted event, in the page's order."""
        listed = [
            (f"sample:{Path(s.file).name}", Path(s.file).name, s.event) for s in loaded.samples
        ]
        pasted = list(self.pasted.items())  # a paste may arrive meanwhile
        listed += [(f"pasted:{n}", f"pasted event {n}", e) for n, e in pasted]
        return listed

    def show(self, loaded: Loaded, key: str, stored: Mapping[str, Any] | None = None) -> Shown:
        """The event ``key`` names (``stored``: the one read from the log), rendered."""
        kind, _, name = key.partition(":")
        if not key:
            return Shown(
                "", "No event yet", None, "add a sample event to the samples folder, or paste one"
            )
        if kind == "stored":
            if stored is None:
                return Shown(key, f"stored event {name}", None, f"no stored event {name}")
            return self.render(loaded, Shown(key, f"stored event {name}", stored))
        for listed_key, title, event in self.events(loaded):
            if listed_key == key:
                return self.render(loaded, Shown(key, title, event))
        return Shown(key, name or "no event", None, "no such event (was the file removed?)")

    def render(self, loaded: Loaded, shown: Shown) -> Shown:
        config = loaded.config
        if config is None or shown.event is None:
            return shown
        event = redacted(shown.event, config.secret_values)  # as the page shows it
        rules = [
            RuleView(
                result,
                [self._send(config, s) for s in result.sends],
                _extras(result, DRAWN_RULE),
            )
            for result in preview(config, shown.event)
        ]
        return dataclasses.replace(shown, shown_event=event, rules=rules)

    @staticmethod
    def _send(config: Config, send: PreviewSend) -> SendView:
        drawn = exhibit(send, config.sinks[send.sink], config.secret_values)
        return SendView(send, drawn, _extras(send, DRAWN_SEND))

    @staticmethod
    def matrix(loaded: Loaded, events: Sequence[tuple[str, str, Mapping[str, Any]]]) -> list[Any]:
        """Per event: (key, title, type, one cell per rule: (state, reason)), state being
        ``matched``, ``error`` (a send failed to render) or ``no``."""
        if loaded.config is None:
            return []
        rows = []
        for key, title, event in events:
            cells = []
            for result in preview(loaded.config, event):
                failed = any(s.error for s in result.sends)
                state = "error" if failed else "matched" if result.matched else "no"
                cells.append((state, result.reason))
            rows.append((key, title, str(event.get("type")), cells))
        return rows


def _extras(result: Any, drawn: frozenset[str]) -> list[tuple[str, str]]:
    """The fields of a preview result the page does not draw itself, as label and text."""
    return [
        (f.name, str(getattr(result, f.name)))
        for f in dataclasses.fields(result)
        if f.name not in drawn and getattr(result, f.name) not in (None, "", [], {}, ())
    ]
