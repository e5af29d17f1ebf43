"""Slack's mrkdwn drawn as HTML: the formatting Slack applies, and nothing from event data ever
becoming markup."""

from __future__ import annotations

import pytest

from relay.studio.slack import mrkdwn, plain


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("*New sign-up:* Ada", "<strong>New sign-up:</strong> Ada"),
        ("_soon_ and ~gone~", "<em>soon</em> and <del>gone</del>"),
        ("id: `user_1`", "id: <code>user_1</code>"),
        ("a\nb", "a<br>b"),
        ("> quoted", '<span class="quote">quoted</span>'),
        ("```\nx = *1*\n```", "<pre>x = *1*</pre>"),
        ("2*3*4 and snake_case_name", "2*3*4 and snake_case_name"),
        (
            "see <https://acme.example/u?id=1&amp;x=2|the user>",
            'see <a href="https://acme.example/u?id=1&amp;amp;x=2" target="_blank" '
            'rel="noopener noreferrer">the user</a>',
        ),
        (
            "<@U123> in <#C42|general>",
            '<span class="mention">@U123</span> in <span class="mention">#general</span>',
        ),
        ("<!here>", '<span class="mention">@here</span>'),
    ],
)
def test_mrkdwn_formatting(text: str, html: str) -> None:
    """Bold, italic, strike, code, breaks, quotes, fences, links and mentions as Slack draws
    them; markers inside words stay text."""
    assert str(mrkdwn(text)) == html


@pytest.mark.parametrize(
    ("text", "html"),
    [
        # what slack_escape makes of event data: shown as the characters, escaped for the page
        (
            "Hi &lt;script&gt;alert(1)&lt;/script&gt; &amp; co",
            "Hi &lt;script&gt;alert(1)&lt;/script&gt; &amp; co",
        ),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("<javascript:alert(1)|click>", "&lt;javascript:alert(1)|click&gt;"),
        ("`<b>`", "<code>&lt;b&gt;</code>"),
        (
            '*"<img src=x onerror=alert(1)>"*',
            '*"&lt;img src=x onerror=alert(1)&gt;"*',
        ),
    ],
)
def test_mrkdwn_never_turns_text_into_markup(text: str, html: str) -> None:
    """Entities and raw angle brackets are text on the page; only http(s)/mailto links link."""
    assert str(mrkdwn(text)) == html


def test_plain_text_is_text() -> None:
    """A plain_text object is shown as written: no formatting, escaped."""
    assert str(plain("*not bold* &lt;b&gt;\nnext")) == "*not bold* &lt;b&gt;<br>next"
