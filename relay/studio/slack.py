"""Slack's mrkdwn as HTML, to draw a message the way Slack shows it.

Enough of Slack's formatting to judge a layout: ``*bold*``, ``_italic_``, ``~strike~``,
```` `code` ```` and fenced blocks, ``> quotes``, line breaks, links ``<https://x|label>``,
mentions (``<@U123>``, ``<#C123|general>``, ``<!here>``) and the three entities Slack escapes
(``&amp; &lt; &gt;``: what ``slack_escape`` makes of event data, shown as the characters they
stand for). Everything is HTML-escaped first; only the tags made here are markup, and a link is
made only for ``http``, ``https`` and ``mailto`` URLs.
"""

from __future__ import annotations

import html
import re

from markupsafe import Markup

__all__ = ["mrkdwn", "plain"]

_ENTITY = re.compile(r"&(amp|lt|gt);")
_ANGLE = re.compile(r"(<[^<>\n]*>)")
_CODE = re.compile(r"(`[^`\n]+`)")
_STYLES = [
    (re.compile(rf"(?<![\w{m}])\{m}(?=\S)([^{m}\n]+?)(?<=\S)\{m}(?![\w{m}])"), tag)
    for m, tag in (("*", "strong"), ("_", "em"), ("~", "del"))
]
_LINK = re.compile(r"^(?:https?://|mailto:)[^\s\"'<>]+$")
_SPECIAL = {"here": "@here", "channel": "@channel", "everyone": "@everyone"}


def plain(text: object) -> Markup:
    """A ``plain_text`` object's text: the characters Slack shows, escaped for the page."""
    return Markup(html.escape(_decoded(str(text)))).replace("\n", Markup("<br>"))  # noqa: S704


def mrkdwn(text: object) -> Markup:
    """A ``mrkdwn`` text (or a message's top-level ``text``) as safe HTML."""
    parts = str(text).split("```")
    if len(parts) % 2 == 0:  # an unclosed fence is text
        parts[-2:] = ["```".join(parts[-2:])]
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<pre>{html.escape(_decoded(part.strip(chr(10))))}</pre>")
        else:
            out.append(_lines(part))
    return Markup("".join(out))  # noqa: S704 (every piece of text was escaped above)


def _decoded(text: str) -> str:
    return _ENTITY.sub(lambda m: {"amp": "&", "lt": "<", "gt": ">"}[m.group(1)], text)


def _lines(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        if line.startswith(("&gt; ", "> ")):
            body = line.split(" ", 1)[1]
            lines.append(f'<span class="quote">{_inline(body)}</span>')
        else:
            lines.append(_inline(line))
    return "<br>".join(lines)


def _inline(text: str) -> str:
    out = []
    for piece in _CODE.split(text):
        if piece.startswith("`") and piece.endswith("`") and len(piece) > 1:
            out.append(f"<code>{html.escape(_decoded(piece[1:-1]))}</code>")
            continue
        for token in _ANGLE.split(piece):
            out.append(_angle(token[1:-1]) if _ANGLE.fullmatch(token) else _styled(token))
    return "".join(out)


def _styled(text: str) -> str:
    escaped = html.escape(_decoded(text), quote=False)
    for pattern, tag in _STYLES:
        escaped = pattern.sub(rf"<{tag}>\1</{tag}>", escaped)
    return escaped


def _angle(inner: str) -> str:
    """``<...>``: a link, a mention or a special; anything else shown as written."""
    target, _, label = inner.partition("|")
    if target.startswith(("@U", "@W", "@B")):
        return f'<span class="mention">@{html.escape(label or target[1:])}</span>'
    if target.startswith("#C"):
        return f'<span class="mention">#{html.escape(label or target[1:])}</span>'
    if target.startswith("!"):
        name = target[1:].split("^")[0]
        shown = _SPECIAL.get(name) or label or f"@{name}"
        return f'<span class="mention">{html.escape(shown)}</span>'
    if _LINK.match(target):
        url = html.escape(target, quote=True)
        text = _styled(label) if label else html.escape(target)
        return f'<a href="{url}" target="_blank" rel="noopener noreferrer">{text}</a>'
    return html.escape(_decoded(f"<{inner}>"))
