"""A rule's ``send:`` entries → compiled ``Send``s, each message template read and compiled once.

``SendModel`` (in ``relay.config.model``) is one ``send:`` entry as written: a sink, an optional
template, and any other keys, which are that sink type's send fields. ``SendCompiler`` checks
those fields against the sink type's ``send_fields`` model and compiles them (a literal field is
kept as written). It also reads the named template from ``templates/`` and compiles each part the
sink type allows, and reports missing and unknown parts.

``relay.config.loader`` makes one ``SendCompiler`` per load and calls ``compile`` for each entry
of each rule, after the sinks are validated. The loader passes in the rules file's ``Document``,
the templates folder, the Jinja ``Environments`` (shared with conditions) and its pydantic-error
``report``. A problem in the rules file is reported there with its line; one in a template file
as ``templates/NAME:LINE:COL``. A template file is read and parsed once, however many sends name
it; its parts are compiled for each send, against that send's sink type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from relay.config import yamlfile
from relay.config.model import SendModel
from relay.errors import Diagnostic, TemplateError, did_you_mean
from relay.rules import Send
from relay.sinks.base import SinkType, TemplateField
from relay.templates import Environments, TextTemplate, Where, compile_data

Report = Callable[[ValidationError, yamlfile.Path_, list[str]], int]
"""The loader's ``_report``: pydantic errors at a path → located diagnostics; returns how many."""


class SendCompiler:
    """Compiles the sends of one rules file; each template file is loaded once and cached."""

    def __init__(
        self,
        doc: yamlfile.Document,
        templates_dir: Path,
        envs: Environments,
        report: Report,
    ) -> None:
        self.doc = doc
        self.templates_dir = templates_dir
        self.envs = envs
        self.report = report
        self.template_docs: dict[str, yamlfile.Document | None] = {}

    def compile(
        self,
        send: SendModel,
        base: yamlfile.Path_,
        index: int,
        sinks: Mapping[str, SinkType],
        known_sinks: Set[str],
    ) -> Send | None:
        """The ``index``-th send of a rule (at ``base``) compiled, or None if wrong (reported).

        ``known_sinks`` names every sink in the file. ``sinks`` gives the type of each valid one,
        so a send to a sink that is itself invalid (and already reported) is dropped silently.
        """
        if send.sink not in known_sinks:
            hint = did_you_mean(send.sink, known_sinks)
            self.doc.error((*base, "sink"), f"unknown sink '{send.sink}'{hint}")
            return None
        sink_type = sinks.get(send.sink)
        if sink_type is None:
            return None  # the sink itself is invalid and already reported
        fields = dict(send.model_extra or {})
        try:
            sink_type.send_fields.model_validate(fields)
        except ValidationError as exc:
            names = [f.alias or n for n, f in sink_type.send_fields.model_fields.items()]
            self.report(exc, base, ["sink", "template", "delay", "window", "unsubscribe", *names])
            return None
        compiled_fields: dict[str, Any] = {}
        literal = sink_type.send_fields.literal_fields
        for key, value in fields.items():
            if key in literal:
                compiled_fields[key] = value  # used as written: never a template
                continue

            def where_of(path: tuple[Any, ...], key: str = key) -> Where:
                mark = self.doc.locate((*base, key, *path))
                return Where(self.doc.file, mark.line, mark.block)

            try:
                compiled_fields[key] = compile_data(self.envs.text, value, where_of)
            except TemplateError as exc:
                self.doc.error((*base, key), f"{key}: {exc.message}")
        parts = self._template(send, base, sink_type)
        if parts is None:
            return None
        return Send(index, send.sink, send.template, parts, compiled_fields)

    def _template(
        self, send: SendModel, base: yamlfile.Path_, sink_type: SinkType
    ) -> dict[str, Any] | None:
        if send.template is None:
            if sink_type.template_required:
                self.doc.error(
                    base,
                    f"missing required key 'template' (a {sink_type.name} send "
                    "needs a message template)",
                )
                return None
            return {}
        tdoc = self._template_doc(send.template, (*base, "template"))
        if tdoc is None:
            return None
        return self._compile_parts(tdoc, sink_type)

    def _template_doc(self, name: str, at: yamlfile.Path_) -> yamlfile.Document | None:
        path = (self.templates_dir / name).resolve()
        if not path.is_relative_to(self.templates_dir.resolve()) or not path.is_file():
            available = [p.name for p in self.templates_dir.glob("*.yaml")]
            self.doc.error(
                at,
                f"template '{name}' not found in {self.templates_dir}/"
                f"{did_you_mean(name, available)}",
            )
            return None
        if name not in self.template_docs:
            file = str(self.templates_dir / name)
            tdoc = yamlfile.load(path.read_text(encoding="utf-8"), file)
            self.doc.diagnostics.extend(tdoc.diagnostics)
            ok = isinstance(tdoc.data, dict) and not tdoc.diagnostics
            if not ok and not tdoc.diagnostics:
                self.doc.diagnostics.append(
                    Diagnostic(file, 1, 1, "a message template must be a mapping of parts")
                )
            self.template_docs[name] = tdoc if ok else None
        return self.template_docs[name]

    def _compile_parts(self, tdoc: yamlfile.Document, sink_type: SinkType) -> dict[str, Any] | None:
        allowed: Mapping[str, TemplateField] = sink_type.template_fields
        parts: dict[str, Any] = {}
        before = len(self.doc.diagnostics)
        report = tdoc.diagnostics
        for key, value in tdoc.data.items():
            kind = allowed.get(key)
            if kind is None:
                hint = did_you_mean(key, allowed)
                tdoc.error(
                    (key,),
                    f"unknown part '{key}' for a {sink_type.name} message{hint}"
                    f" (allowed: {', '.join(allowed)})",
                    key=True,
                )
                continue
            try:
                parts[key] = self._compile_part(tdoc, key, value, kind)
            except TemplateError as exc:
                report.append(Diagnostic(exc.file or tdoc.file, exc.line or 1, 1, exc.message))
        for key, kind in allowed.items():
            if kind.required and key not in tdoc.data:
                tdoc.error((), f"missing required part '{key}' for a {sink_type.name} message")
        self.doc.diagnostics.extend(report)
        report.clear()
        return parts if len(self.doc.diagnostics) == before else None

    def _compile_part(
        self, tdoc: yamlfile.Document, key: str, value: Any, kind: TemplateField
    ) -> Any:
        mark = tdoc.locate((key,))
        env = self.envs.for_kind(kind.kind)
        if kind.kind.endswith("data"):

            def where_of(path: tuple[Any, ...]) -> Where:
                leaf = tdoc.locate((key, *path))
                return Where(tdoc.file, leaf.line, leaf.block)

            return compile_data(env, value, where_of)
        if not isinstance(value, str):
            raise TemplateError(f"part '{key}' must be a string", file=tdoc.file, line=mark.line)
        return TextTemplate(env, value, Where(tdoc.file, mark.line, mark.block))
