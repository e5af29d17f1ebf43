"""``rules.yaml`` and ``templates/`` → a validated, compiled ``Config``, or every error at once.

Each problem is reported as ``FILE:LINE:COL: message``. Loading validates sources, sinks (through
each sink type's own settings model), rules, patterns, conditions, templates, send fields and the
workflow keys (``relay.config.workflow``), and compiles every template once. ``relay check`` and
``relay serve`` load through the same function; only the severity of an unset environment
variable differs (warning for check, error for serve).

The models of the file and the runtime specs are in ``relay.config.model``. The loader compiles
each rule's sends (send fields and message templates) through a ``relay.config.sends.SendCompiler``,
created once per load.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from relay.config import yamlfile
from relay.config.model import Config, Mode, RuleModel, RulesFileModel, SinkSpec, SourceSpec
from relay.config.sends import SendCompiler
from relay.config.unsubscribe import UnsubscribeCompiler
from relay.config.workflow import WorkflowCompiler
from relay.errors import ConfigError, Diagnostic, TemplateError, did_you_mean
from relay.rules import Condition, Rule, valid_pattern
from relay.secret import Secret, secret_fragments, url_credentials
from relay.sinks.base import SinkType, load_sink_types
from relay.sources.base import SourceType, load_source_types
from relay.templates import Environments

RESERVED_PATHS = ("/healthz", "/readyz", "/metrics")
UNSUBSCRIBE_PATH = "/unsubscribe"  # and what is under it: the one-click links
RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_SOURCES = {
    "clerk": {"path": "/webhooks/clerk", "secret": "${CLERK_WEBHOOK_SIGNING_SECRET}"}
}


def load_config(
    rules_path: Path,
    templates_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    mode: Mode = "serve",
    sink_types: Mapping[str, SinkType] | None = None,
    source_types: Mapping[str, SourceType] | None = None,
) -> Config:
    """Load and validate everything; raise ConfigError listing every error (warnings included)."""
    env = os.environ if env is None else env
    file = str(rules_path)
    try:
        text = rules_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Diagnostic(file, 1, 1, f"cannot read rules file: {exc}")]) from exc
    doc = yamlfile.load(text, file, env, missing_env=_missing_env_severity(mode))
    broken: dict[str, str] = {}
    types = load_sink_types(broken) if sink_types is None else sink_types
    broken_sources: dict[str, str] = {}
    if source_types is None:
        source_types = load_source_types(broken_sources)
    loader = _Loader(doc, templates_dir, types, env, mode, broken)
    loader.source_types, loader.broken_sources = source_types, broken_sources
    config = loader.run()
    errors = [d for d in doc.diagnostics if d.severity == "error"]
    if errors or config is None:
        raise ConfigError(sorted(doc.diagnostics, key=lambda d: (d.file != file, d.file, d.line)))
    return config


def _missing_env_severity(mode: Mode) -> Callable[[yamlfile.Path_], str]:
    """check: every unset variable is a warning; serve: an error; dry-run: an error only for
    sources (verification stays on), a warning for sinks (they only log)."""

    def severity(path: yamlfile.Path_) -> str:
        if mode == "check" or (mode == "dry-run" and path[:1] != ("sources",)):
            return "warning"
        return "error"

    return severity


class _Loader:
    def __init__(
        self,
        doc: yamlfile.Document,
        templates_dir: Path,
        sink_types: Mapping[str, SinkType],
        env: Mapping[str, str],
        mode: Mode,
        broken: Mapping[str, str],
    ) -> None:
        self.doc = doc
        self.broken = broken
        self.sink_types = sink_types
        self.env = env
        self.mode = mode
        self.envs = Environments.for_dir(templates_dir)
        self.sends = SendCompiler(doc, templates_dir, self.envs, self._report)
        self.workflows = WorkflowCompiler(doc, self.envs)
        self.unsubscribe = UnsubscribeCompiler(doc, env, mode)
        self.secrets: set[str] = set()
        self.source_types: Mapping[str, SourceType] = {}
        self.broken_sources: Mapping[str, str] = {}
        self.known_types: list[str] | None = []  # None: some source's types are open-ended
        self.senders: list[str] = []

    def run(self) -> Config | None:
        doc = self.doc
        if doc.data is None and not doc.diagnostics:
            doc.error((), "the rules file is empty")
        if not isinstance(doc.data, dict):
            if doc.data is not None:
                doc.error((), "the rules file must be a mapping with sources, sinks and rules")
            return None
        data = dict(doc.data)
        if "sources" not in data:
            data["sources"] = {
                name: {
                    k: yamlfile._expand(
                        v, ("sources",), doc, self.env, _missing_env_severity(self.mode)
                    )
                    for k, v in src.items()
                }
                for name, src in DEFAULT_SOURCES.items()
            }
        try:
            model = RulesFileModel.model_validate(data)
        except ValidationError as exc:
            if not self._report(exc, ()):  # only unset variables are wrong, but nothing can
                self._report(exc, (), suppress=False)  # be checked without them: say so
            return None
        sources = self._sources(model)
        sinks = self._sinks(model)
        rules = self._rules(model, sinks)
        self.unsubscribe.finish()
        for value in self.unsubscribe.secrets:
            self.secrets.update(secret_fragments(value))
        if sources is None:
            return None
        warnings = tuple(d for d in doc.diagnostics if d.severity != "error")
        return Config(
            sources,
            sinks,
            tuple(rules),
            warnings,
            frozenset(self.secrets),
            retention_s=model.retention.events,
            unsubscribe=self.unsubscribe.links,
        )

    def _report(
        self,
        exc: ValidationError,
        base: tuple[str | int, ...],
        names: Any = (),
        *,
        suppress: bool = True,
    ) -> int:
        """Turn pydantic errors into located diagnostics; returns how many were reported."""
        reported = 0
        for err in exc.errors():
            path = (*base, *err["loc"])
            if (
                suppress
                and err["type"] != "extra_forbidden"  # a misspelt key is wrong whatever its value
                and self._unresolved(path, whole=not err["loc"])
            ):
                continue  # already reported as an unset environment variable
            reported += 1
            kind, leaf = err["type"], str(err["loc"][-1]) if err["loc"] else ""
            if kind == "extra_forbidden":
                self.doc.error(path, f"unknown key '{leaf}'{did_you_mean(leaf, names)}", key=True)
            elif kind == "missing":
                self.doc.error(path[:-1], f"missing required key '{leaf}'", key=True)
            else:
                where = f"{leaf}: " if leaf and not leaf.isdigit() else ""
                msg = err["msg"].removeprefix("Value error, ")
                self.doc.error(path, f"{where}{msg}")
        return reported

    def _unresolved(self, path: tuple[str | int, ...], *, whole: bool) -> bool:
        """Whether ``path`` (or, for a model-level error, anything in it) had an unset ${VAR}."""
        if any(path[:i] in self.doc.unresolved for i in range(len(path) + 1)):
            return True
        return whole and any(u[: len(path)] == path for u in self.doc.unresolved)

    def _sources(self, model: RulesFileModel) -> dict[str, SourceSpec] | None:
        sources: dict[str, SourceSpec] = {}
        paths: dict[str, str] = {}
        for name, raw in model.sources.items():
            base = ("sources", name)
            source_type = self._source_type(base, raw)
            if source_type is None:
                continue
            self._note_event_types(source_type)
            complete = True
            try:
                settings = source_type.settings.model_validate(raw)
            except ValidationError as exc:
                names = [f.alias or n for n, f in source_type.settings.model_fields.items()]
                if self._report(exc, base, names) or self.mode != "check":
                    continue
                # Only unset variables are wrong: check still vouches for the rest of the file.
                settings = source_type.settings.model_construct(**raw)
                complete = False
            path = settings.path
            if path in paths:
                self.doc.error(
                    (*base, "path"), f"path {path} is already served by source '{paths[path]}'"
                )
            paths[path] = name
            if path in RESERVED_PATHS:
                self.doc.error((*base, "path"), f"path {path} is reserved for relay itself")
            elif path == UNSUBSCRIBE_PATH or path.startswith(UNSUBSCRIBE_PATH + "/"):
                self.doc.error(
                    (*base, "path"), f"path {path} is reserved for relay's unsubscribe links"
                )
            self._collect_secrets(settings)
            sources[name] = SourceSpec(
                name, path, source_type, settings, settings.max_body_bytes, complete
            )
        return sources

    def _source_type(self, base: tuple[str, ...], raw: Any) -> SourceType | None:
        """The type a source's ``verify:`` names (default ``svix``), or None (reported)."""
        types = self.source_types
        if not isinstance(raw, dict):
            self.doc.error(base, f"source '{base[-1]}' must be a mapping with a path and a secret")
            return None
        type_name = raw.get("verify", "svix")
        if not isinstance(type_name, str):
            choices = ", ".join(sorted(types))
            self.doc.error((*base, "verify"), f"verify: name a source type (one of: {choices})")
            return None
        if type_name not in types and type_name in self.broken_sources:
            self.doc.error(
                (*base, "verify"),
                f"source type '{type_name}' failed to load: {self.broken_sources[type_name]}",
            )
            return None
        if type_name not in types:
            hint = did_you_mean(type_name, types) or f" (one of: {', '.join(sorted(types))})"
            self.doc.error((*base, "verify"), f"unknown source type '{type_name}'{hint}")
            return None
        return types[type_name]

    def _note_event_types(self, source_type: SourceType) -> None:
        if source_type.event_types is None:
            self.known_types = None
        elif self.known_types is not None:
            self.known_types += [t for t in source_type.event_types if t not in self.known_types]
            if source_type.sender and source_type.sender not in self.senders:
                self.senders.append(source_type.sender)

    def _sinks(self, model: RulesFileModel) -> dict[str, SinkSpec]:
        sinks: dict[str, SinkSpec] = {}
        for name, raw in model.sinks.items():
            base = ("sinks", name)
            if not isinstance(raw, dict):
                self.doc.error(base, f"sink '{name}' must be a mapping with a type")
                continue
            type_name = raw.get("type")
            if not isinstance(type_name, str):
                self.doc.error(
                    base,
                    f"sink '{name}' has no type (one of: {', '.join(sorted(self.sink_types))})",
                )
                continue
            sink_type = self.sink_types.get(type_name)
            if sink_type is None and type_name in self.broken:
                self.doc.error(
                    (*base, "type"),
                    f"sink type '{type_name}' failed to load: {self.broken[type_name]}",
                )
                continue
            if sink_type is None:
                hint = did_you_mean(type_name, self.sink_types)
                self.doc.error((*base, "type"), f"unknown sink type '{type_name}'{hint}")
                continue
            try:
                settings = sink_type.settings.model_validate(raw)
            except ValidationError as exc:
                names = [f.alias or n for n, f in sink_type.settings.model_fields.items()]
                if self._report(exc, base, names) or self.mode == "serve":
                    continue
                # Only unset variables are wrong: check and preview still render its sends.
                settings = sink_type.settings.model_construct(**raw)
            self._collect_secrets(settings)
            sinks[name] = SinkSpec(name, sink_type, settings)
        return sinks

    def _collect_secrets(self, value: Any) -> None:
        if isinstance(value, Secret):
            if value.reveal():
                self.secrets.update(secret_fragments(value.reveal()))
        elif isinstance(value, str) and "://" in value:
            self.secrets.update(url_credentials(value))  # a token in a plain URL's query
        elif isinstance(value, BaseModel):
            for item in value.__dict__.values():
                self._collect_secrets(item)
        elif isinstance(value, Mapping):
            for item in value.values():
                self._collect_secrets(item)

    def _rules(self, model: RulesFileModel, sinks: Mapping[str, SinkSpec]) -> list[Rule]:
        rules: list[Rule] = []
        seen: dict[str, int] = {}
        known_sinks = set(model.sinks)
        types_by_sink = {name: spec.type for name, spec in sinks.items()}
        for i, rule in enumerate(model.rules):
            base: tuple[str | int, ...] = ("rules", i)
            if not RULE_NAME.match(rule.name):
                self.doc.error(
                    (*base, "name"),
                    f"invalid rule name '{rule.name}' (use letters, digits, '-', '_' and '.')",
                )
            if rule.name in seen:
                self.doc.error(
                    (*base, "name"),
                    f"duplicate rule name '{rule.name}' (first used "
                    f"at line {self.doc.locate(('rules', seen[rule.name])).line})",
                )
            seen.setdefault(rule.name, i)
            patterns = self._patterns(rule, base)
            condition = self._condition(rule, base)
            compiled = (
                self.sends.compile(send, (*base, "send", j), j, types_by_sink, known_sinks)
                for j, send in enumerate(rule.send)
            )
            sends = tuple(s for s in compiled if s is not None)
            workflow, sends = self.workflows.compile(rule, base, sends, self.known_types)
            sends = self.unsubscribe.compile(rule, base, sends, types_by_sink)
            line = self.doc.locate(base).line
            rules.append(Rule(rule.name, patterns, condition, sends, line, workflow))
        return rules

    def _patterns(self, rule: RuleModel, base: tuple[str | int, ...]) -> tuple[str, ...]:
        raw = [rule.events] if isinstance(rule.events, str) else rule.events
        if not raw:
            self.doc.error((*base, "events"), "events: list at least one event type or pattern")
        for k, pattern in enumerate(raw):
            path = (*base, "events") if isinstance(rule.events, str) else (*base, "events", k)
            problem = valid_pattern(pattern)
            if problem:
                self.doc.error(path, f"bad event pattern '{pattern}': {problem}")
            elif self.known_types and not any(
                Rule.pattern_matches(pattern, t) for t in self.known_types
            ):
                hint = did_you_mean(pattern, self.known_types)
                senders = " or ".join(self.senders)
                self.doc.error(
                    path,
                    f"event pattern '{pattern}' matches no known {senders} event type{hint}",
                    severity="warning",
                )
        return tuple(raw)

    def _condition(self, rule: RuleModel, base: tuple[str | int, ...]) -> Condition | None:
        if rule.when is None:
            return None
        try:
            return Condition(self.envs.text, rule.when)
        except TemplateError as exc:
            self.doc.error((*base, "when"), f"malformed condition: {exc.message}")
            return None
