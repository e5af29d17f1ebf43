"""A strict, line-tracking YAML loader for files that people edit by hand.

It fixes PyYAML's YAML 1.1 traps: only ``true``/``false`` are booleans (``on``, ``yes``, ``no`` stay
strings), duplicate keys are errors, and mapping keys must be strings. Anchors and aliases
(``&name``, ``*name``) are refused, like merge keys: a few lines of nested aliases expand to
billions of values (a "billion laughs"), and a hand-edited file reads better without them.

It remembers where every value came from so that a validation error can be reported as
``FILE:LINE:COL: message``, and it expands ``${VAR}`` / ``${VAR:-default}`` from the environment in
string values (``$${`` is a literal ``${``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from relay.errors import Diagnostic

Path_ = tuple[str | int, ...]

_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_BAD_ENV_REF = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\})")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


class _AnchorError(yaml.MarkedYAMLError):
    """An anchor or an alias, refused where the parser meets it."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and no anchors or aliases."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            kind = "an alias (*name)" if isinstance(event, yaml.AliasEvent) else "an anchor (&name)"
            raise _AnchorError(
                problem=f"{kind}: YAML anchors and aliases are not supported; write the value out",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))


@dataclass(frozen=True, slots=True)
class Mark:
    line: int  # 1-based
    col: int  # 1-based
    block: bool = False  # a literal/folded block scalar: its text starts on the next line


@dataclass
class Document:
    """Loaded data plus where each path came from."""

    file: str
    data: Any
    marks: dict[Path_, Mark] = field(default_factory=dict)  # value positions
    key_marks: dict[Path_, Mark] = field(default_factory=dict)  # mapping-key positions
    unresolved: set[Path_] = field(default_factory=set)  # values with a missing ${VAR}
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def locate(self, path: Path_, *, key: bool = False) -> Mark:
        """The position of ``path``, or of its closest ancestor that has one."""
        table = self.key_marks if key else self.marks
        for end in range(len(path), -1, -1):
            sub = path[:end]
            if sub in table:
                return table[sub]
            if sub in self.marks:
                return self.marks[sub]
        return Mark(1, 1)

    def at(self, mark: Mark, message: str) -> None:
        self.diagnostics.append(Diagnostic(self.file, mark.line, mark.col, message))

    def error(
        self, path: Path_, message: str, *, key: bool = False, severity: str = "error"
    ) -> None:
        mark = self.locate(path, key=key)
        self.diagnostics.append(Diagnostic(self.file, mark.line, mark.col, message, severity))


def _mark(node: yaml.Node) -> Mark:
    style = getattr(node, "style", None)
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1, style in ("|", ">"))


Severity = str | Callable[[Path_], str]


def load(
    text: str, file: str, env: Mapping[str, str] | None = None, *, missing_env: Severity = "error"
) -> Document:
    """Parse ``text``; ``env`` (if given) expands ``${VAR}``. Problems land in ``diagnostics``.

    ``missing_env`` is the severity of an undefined variable (``error`` or ``warning``), or a
    function of the value's path giving it.
    """
    doc = Document(file, None)
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
    except _AnchorError as exc:
        at = exc.problem_mark
        line, col = (at.line + 1, at.column + 1) if at else (1, 1)
        doc.diagnostics.append(Diagnostic(file, line, col, str(exc.problem)))
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        doc.diagnostics.append(Diagnostic(file, line, col, f"invalid YAML: {problem}"))
        return doc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        doc.diagnostics.append(
            Diagnostic(file, line, col, f"invalid YAML: character {exc.character!r} is not allowed")
        )
        return doc
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())
        doc.diagnostics.append(Diagnostic(file, 1, 1, f"invalid YAML: {message}"))
        return doc
    if node is not None:
        doc.data = _build(node, (), doc, env, missing_env, _StrictLoader(""))
    return doc


def _build(
    node: yaml.Node,
    path: Path_,
    doc: Document,
    env: Mapping[str, str] | None,
    missing_env: Severity,
    loader: _StrictLoader,
) -> Any:
    doc.marks[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                doc.at(_mark(key_node), "mapping keys must be plain strings")
                continue
            key = str(key_node.value)
            if key == "<<":
                doc.at(_mark(key_node), "merge keys (<<) are not supported")
                continue
            if key in result:
                first = doc.key_marks[(*path, key)]
                doc.at(
                    _mark(key_node), f"duplicate key '{key}' (first defined at line {first.line})"
                )
                continue
            doc.key_marks[(*path, key)] = _mark(key_node)
            result[key] = _build(value_node, (*path, key), doc, env, missing_env, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), doc, env, missing_env, loader)
            for i, item in enumerate(node.value)
        ]
    try:
        value = loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError):
        doc.at(_mark(node), f"unsupported YAML value or tag {node.tag!r}")
        return None
    if isinstance(value, str) and env is not None and "$" in value:
        value = _expand(value, path, doc, env, missing_env)
    return value


def _expand(
    value: str, path: Path_, doc: Document, env: Mapping[str, str], severity: Severity
) -> str:
    if _BAD_ENV_REF.search(value.replace("$${", "")):
        doc.error(path, "malformed ${...} reference (use ${NAME} or ${NAME:-default})")
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        doc.unresolved.add(path)
        level = severity if isinstance(severity, str) else severity(path)
        doc.error(path, f"environment variable {name} is not set", severity=level)
        return ""

    return _ENV_REF.sub(substitute, value)
