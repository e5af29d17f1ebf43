"""``unsubscribe:`` on rules and sends, and the settings its links need, checked alike by
``relay serve``, every reload and ``relay check``.

A rule's ``unsubscribe: <category>`` applies to its email sends (those whose sink type names
recipients: ``resend``); a send's own ``unsubscribe:`` replaces it, and ``unsubscribe: false``
leaves a transactional send (a welcome email) without the header. Each such send gets an
``UnsubscribeSend`` (``relay.recipients.links``).

The links come from the process's environment, read here so that a missing or weak value is a
located error where it is used (``rules.yaml:LINE:COL``), like an unset ``${VAR}``:

======================================  =========================================================
``RELAY_UNSUBSCRIBE_SECRET``            the HMAC key of the tokens: 32 random characters or more
``RELAY_UNSUBSCRIBE_SECRET_PREVIOUS``   during a rotation: links made with it keep working
``RELAY_PUBLIC_URL``                    where the public port is reached (``https://...``)
``RELAY_UNSUBSCRIBE_MAILTO``            optional: an address for a ``mailto:`` beside the link
======================================  =========================================================

An unset secret or URL is an error for ``relay serve`` when a rule uses ``unsubscribe``, and a
warning for ``relay check`` and ``--dry-run`` (which then make placeholder links); a malformed
value is an error for each. A valid secret serves the endpoint even when no rule uses it any
more, so the links of emails already sent keep working.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import urlsplit

from relay.config import yamlfile
from relay.config.model import Mode, RuleModel
from relay.recipients.addresses import ALL, CATEGORY, normalise
from relay.recipients.links import UnsubscribeLinks, UnsubscribeSend
from relay.recipients.tokens import UnsubscribeKeys, check_secret
from relay.rules import Send
from relay.secret import Secret
from relay.sinks.base import SinkType

SECRET = "RELAY_UNSUBSCRIBE_SECRET"  # noqa: S105 (a variable's name)
PREVIOUS = "RELAY_UNSUBSCRIBE_SECRET_PREVIOUS"
PUBLIC_URL = "RELAY_PUBLIC_URL"
MAILTO = "RELAY_UNSUBSCRIBE_MAILTO"
LOOPBACK = ("localhost", "127.0.0.1", "::1")
# The key of the placeholder links (`relay check`, `--dry-run` without the secret): never served.
_PLACEHOLDER = Secret("relay-placeholder-links-work-nowhere-0123456789abcdef")


class UnsubscribeCompiler:
    """Reads the settings once per load, gives each email send of a category its links
    (``compile``, per rule), then reports the settings' problems where they matter (``finish``)."""

    def __init__(self, doc: yamlfile.Document, env: Mapping[str, str], mode: Mode) -> None:
        self.doc = doc
        self.mode = mode
        self.problems: list[tuple[str, str]] = []  # (message, "missing" | "bad" | "note")
        self.secrets: list[str] = []
        self.first_use: yamlfile.Path_ | None = None
        self.refused: set[yamlfile.Path_] = set()  # categories reported (a rule's, once)
        self.links = self._read(env)

    def compile(
        self,
        model: RuleModel,
        base: yamlfile.Path_,
        sends: tuple[Send, ...],
        types: Mapping[str, SinkType],
    ) -> tuple[Send, ...]:
        """The rule's sends, each email send of a category with its ``UnsubscribeSend``."""
        out, emails = [], 0
        for send in sends:
            own = model.send[send.index].unsubscribe
            at = (*base, "send", send.index, "unsubscribe") if own is not None else None
            category = own if own is not None else model.unsubscribe
            sink_type = types[send.sink]
            if sink_type.recipients is None:
                if at is not None:
                    self.doc.error(
                        at,
                        f"unsubscribe: only email sends take it (sink '{send.sink}' is a"
                        f" {sink_type.name} sink)",
                    )
                out.append(send)
                continue
            emails += 1
            where = at or (*base, "unsubscribe")
            if not isinstance(category, str) or self._refused(category, where):
                out.append(send)
                continue
            self.first_use = self.first_use or where
            unsubscribe = UnsubscribeSend(category, self.links, sink_type.recipients)
            out.append(dataclasses.replace(send, unsubscribe=unsubscribe))
        if model.unsubscribe is not None and not emails and sends:
            self.doc.error((*base, "unsubscribe"), "unsubscribe: this rule sends no email")
        return tuple(out)

    def _refused(self, category: str, at: yamlfile.Path_) -> bool:
        if at in self.refused:
            return True
        if category == ALL:
            message = (
                "unsubscribe: 'all' is the scope of bounces and complaints; name the category of"
                " these emails (onboarding, newsletter, ...): a link unsubscribes from its category"
            )
        elif not CATEGORY.fullmatch(category):
            message = (
                f"unsubscribe: '{category}' is not a category name (lower-case letters, digits,"
                " '-', '_' and '.'; at most 64)"
            )
        else:
            return False
        self.doc.error(at, message)
        self.refused.add(at)
        return True

    def finish(self) -> None:
        """Report the settings' problems at the first ``unsubscribe:`` (or the file's top, for
        a malformed value no rule uses): unset ones only when used (serve: an error; check,
        dry-run: a warning), malformed ones always."""
        for message, kind in self.problems:
            if kind != "bad" and self.first_use is None:
                continue
            severity = "error" if kind == "bad" or self.mode == "serve" else "warning"
            severity = "warning" if kind == "note" else severity
            self.doc.error(self.first_use or (), message, severity=severity)

    def _read(self, env: Mapping[str, str]) -> UnsubscribeLinks | None:
        keys = self._keys(env)
        url = self._public_url(env.get(PUBLIC_URL, ""))
        given = env.get(MAILTO, "")
        mailto = normalise(given) if given else None
        if given and mailto is None:
            self.problems.append((f"{MAILTO} is not an email address: {given!r}", "bad"))
        if keys is not None:
            return UnsubscribeLinks(url, keys, mailto)
        if self.mode == "serve":
            return None
        return UnsubscribeLinks(url, UnsubscribeKeys(_PLACEHOLDER), mailto, placeholder=True)

    def _keys(self, env: Mapping[str, str]) -> UnsubscribeKeys | None:
        """The keys, or None when the secret is unset or a set one is malformed."""
        current = env.get(SECRET, "")
        if not current:
            self.problems.append((
                f"{SECRET} is not set: the one-click unsubscribe links need it (32 random"
                " characters or more, e.g. `openssl rand -base64 32`)",
                "missing",
            ))  # fmt: skip
        keys, usable = [], bool(current)
        for name, value in ((SECRET, current), (PREVIOUS, env.get(PREVIOUS, ""))):
            if not value:
                continue
            self.secrets.append(value)
            try:
                check_secret(value)
            except ValueError as exc:
                self.problems.append((f"{name} {exc}", "bad"))
                usable = False
            keys.append(Secret(value))
        return UnsubscribeKeys(*keys) if usable else None

    def _public_url(self, raw: str) -> str | None:
        if not raw:
            self.problems.append((
                f"{PUBLIC_URL} is not set: the one-click links of emails point there (the"
                " https:// address where relay's public port is reached)",
                "missing",
            ))  # fmt: skip
            return None
        try:
            parts = urlsplit(raw)
            host = parts.hostname
        except ValueError:
            parts, host = None, None
        if parts is None or parts.scheme not in ("https", "http") or not host:
            problem = "is not an http(s) URL"
        elif parts.query or parts.fragment or parts.username or parts.password:
            problem = "must be a plain URL: no query, fragment or user"
        elif parts.scheme == "http" and host not in LOOPBACK:
            problem = (
                "must be https:// (RFC 8058: mailbox providers follow one-click links over https"
                " only); http:// is accepted for localhost alone"
            )
        else:
            if parts.scheme == "http":
                self.problems.append((
                    f"{PUBLIC_URL} is http://: mailbox providers offer one-click unsubscribe for"
                    " https links only (fine for trying relay on this machine)",
                    "note",
                ))  # fmt: skip
            return raw.rstrip("/")
        self.problems.append((f"{PUBLIC_URL} {problem}: {raw!r}", "bad"))
        return None
