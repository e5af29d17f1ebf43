"""Message templates: sandboxed Jinja, compiled once at load, rendered per event.

A message template is a YAML file in ``templates/`` whose keys are the parts of a message (for
email: ``subject``, ``text``, ``html``). Each string is a Jinja template; ``html`` parts are
autoescaped, ``text`` parts are not, and ``data`` parts (Slack blocks, an HTTP JSON body) are YAML
structures whose string leaves are templates; a leaf that is exactly ``{{ expr }}`` keeps the
expression's type (a number stays a number). ``{% include 'file.html' %}`` reads from the same
folder. Undefined variables are errors, never silent blanks; ``None`` renders as an empty string.

Templates see ``event`` (the whole envelope), ``data`` (``event.data``), ``type``, and the helpers
``primary_email(user)`` and ``display_name(user)`` (also as filters); a digest's also see
``events`` (its events' envelopes) and ``count``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from relay.errors import TemplateError

MAX_OUTPUT_CHARS = 256 * 1024
_NATIVE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)


def primary_email(user: Any) -> str | None:
    """The user's primary email address: the entry whose id is ``primary_email_address_id``.

    Never ``email_addresses[0]``. None when the user has no primary id (phone-only, web3), the
    list is empty, or the id matches nothing. Accepts a Clerk user or a session's ``user``.
    """
    if not isinstance(user, Mapping):
        return None
    primary_id = user.get("primary_email_address_id")
    addresses = user.get("email_addresses")
    if not primary_id or not isinstance(addresses, list):
        return None
    for entry in addresses:
        if isinstance(entry, Mapping) and entry.get("id") == primary_id:
            address = entry.get("email_address")
            return address if isinstance(address, str) and address.strip() else None
    return None


def display_name(user: Any, fallback: str = "there") -> str:
    """A name to greet someone by: first and last name, either one, the username, else fallback.

    Works on a Clerk user and on a membership's ``public_user_data``.
    """
    if not isinstance(user, Mapping):
        return fallback
    parts = [user.get("first_name"), user.get("last_name")]
    name = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
    if name:
        return name
    username = user.get("username")
    if isinstance(username, str) and username.strip():
        return username.strip()
    return fallback


def _none_to_empty(value: Any) -> Any:
    return "" if value is None else value


def slack_escape(value: Any) -> Any:
    """Escape ``&``, ``<`` and ``>`` as Slack requires, so event data cannot inject a mention
    (``<!channel>``) or a link; ``None`` renders as nothing."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def make_environment(
    templates_dir: Path | None,
    *,
    autoescape: bool,
    finalize: Callable[[Any], Any] = _none_to_empty,
) -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(str(templates_dir)) if templates_dir else None
    env = ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        finalize=finalize,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    helpers: dict[str, Callable[..., Any]] = {
        "primary_email": primary_email,
        "display_name": display_name,
    }
    env.globals.update(helpers)
    env.filters.update(helpers)
    return env


@dataclass(frozen=True)
class Environments:
    """The sandboxed environments: plain text, autoescaped HTML, and Slack-escaped text."""

    text: jinja2.Environment
    html: jinja2.Environment
    slack: jinja2.Environment

    @classmethod
    def for_dir(cls, templates_dir: Path | None) -> Environments:
        return cls(
            make_environment(templates_dir, autoescape=False),
            make_environment(templates_dir, autoescape=True),
            make_environment(templates_dir, autoescape=False, finalize=slack_escape),
        )

    def for_kind(self, kind: str) -> jinja2.Environment:
        """``text``/``data`` → text, ``html`` → html, ``slack``/``slack-data`` → slack."""
        if kind == "html":
            return self.html
        return self.slack if kind.startswith("slack") else self.text


@dataclass(frozen=True)
class Where:
    """Where a template string lives, to locate its errors: ``file:line``."""

    file: str
    line: int
    block: bool = False  # a YAML block scalar: its first template line is line + 1

    def line_of(self, template_line: int) -> int:
        return self.line + template_line - (0 if self.block else 1)


class TextTemplate:
    """One compiled Jinja string."""

    def __init__(self, env: jinja2.Environment, source: str, where: Where) -> None:
        self.where = where
        self.source = source
        try:
            code = env.compile(source, name=where.file, filename=where.file)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                str(exc.message), file=where.file, line=where.line_of(exc.lineno)
            ) from exc
        self._template = env.template_class.from_code(env, code, env.make_globals(None))

    def render(self, context: Mapping[str, Any]) -> str:
        try:
            out = self._template.render(context)
        except TemplateError:
            raise
        except Exception as exc:
            raise TemplateError(_describe(exc), file=self.where.file, line=self._line(exc)) from exc
        if len(out) > MAX_OUTPUT_CHARS:
            raise TemplateError(
                f"output is larger than {MAX_OUTPUT_CHARS} characters",
                file=self.where.file,
                line=self.where.line,
            )
        return out

    def _line(self, exc: BaseException) -> int:
        tb = exc.__traceback__
        line = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self.where.file:
                line = tb.tb_lineno
            tb = tb.tb_next
        return self.where.line_of(line) if line else self.where.line


class NativeExpression:
    """A ``{{ expr }}`` leaf of a data template: evaluates to the expression's own value."""

    def __init__(self, env: jinja2.Environment, expr: str, where: Where) -> None:
        self.where = where
        self._finalize = env.finalize or _none_to_empty
        try:
            self._expr = env.compile_expression(expr, undefined_to_none=False)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(str(exc.message), file=where.file, line=where.line) from exc

    def render(self, context: Mapping[str, Any]) -> Any:
        try:
            value = self._expr(**context)
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
        except Exception as exc:
            raise TemplateError(_describe(exc), file=self.where.file, line=self.where.line) from exc
        return self._finalize(value) if isinstance(value, str) else value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined variable: {exc.message}"
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return f"not allowed in the sandbox: {exc}"
    return f"{type(exc).__name__}: {exc}"


Compiled = TextTemplate | NativeExpression | list[Any] | dict[str, Any] | None | bool | int | float


def compile_data(
    env: jinja2.Environment, value: Any, where_of: Callable[[tuple[Any, ...]], Where]
) -> Compiled:
    """Compile every string leaf of a YAML structure; ``where_of(path)`` locates a leaf."""

    def walk(node: Any, path: tuple[Any, ...]) -> Any:
        if isinstance(node, str):
            native = _NATIVE.match(node)
            if native:
                return NativeExpression(env, native.group("expr"), where_of(path))
            return TextTemplate(env, node, where_of(path))
        if isinstance(node, list):
            return [walk(item, (*path, i)) for i, item in enumerate(node)]
        if isinstance(node, dict):
            return {key: walk(item, (*path, key)) for key, item in node.items()}
        return node

    return walk(value, ())  # type: ignore[no-any-return]


def render_data(compiled: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(compiled, TextTemplate | NativeExpression):
        return compiled.render(context)
    if isinstance(compiled, list):
        return [render_data(item, context) for item in compiled]
    if isinstance(compiled, dict):
        return {key: render_data(item, context) for key, item in compiled.items()}
    return compiled


def event_context(event: Mapping[str, Any]) -> dict[str, Any]:
    """The variables a template sees for one event envelope."""
    data = event.get("data")
    return {"event": event, "data": data if data is not None else {}, "type": event.get("type")}


def digest_context(event: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a digest's template sees: ``events`` (the envelopes, oldest first) and ``count``,
    and ``event``/``data``/``type`` of ``event`` (the first of them)."""
    return {**event_context(event), "events": list(events), "count": len(events)}
