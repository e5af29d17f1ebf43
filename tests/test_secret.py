"""Secrets: redacted reprs, and redaction of the parts of a secret an upstream may quote back."""

from __future__ import annotations

import pytest

from relay.secret import Secret, redact, secret_fragments


def test_secret_repr_and_str_are_redacted() -> None:
    """A Secret never shows its value, however it is printed."""
    secret = Secret("re_live_abcdef123456")
    assert "abcdef" not in repr(secret) + str(secret) + f"{secret}" + repr([secret])
    assert secret.reveal() == "re_live_abcdef123456"


@pytest.mark.parametrize(
    ("secret", "quoted"),
    [
        (
            "https://hooks.slack.com/services/T0/B0/Xq9sPz71LmN2oKw",
            "Cannot POST /services/T0/B0/Xq9sPz71LmN2oKw",
        ),
        ("https://hooks.slack.com/services/T0/B0/Xq9sPz71LmN2oKw", "no_team for Xq9sPz71LmN2oKw"),
        ("https://api.example/hook?token=s3cr3tvalue&v=1", "bad token s3cr3tvalue"),
        ("Bearer tok_live_9f8e7d6c5b4a", "invalid credential tok_live_9f8e7d6c5b4a"),
        ("postgresql://relay:hunter2222@db/app", "auth failed for hunter2222"),
    ],
)
def test_redaction_covers_parts_quoted_back(secret: str, quoted: str) -> None:
    """An upstream that echoes only part of a secret (a token from a URL or header) is redacted."""
    cleaned = redact(quoted, secret_fragments(secret))
    assert "[redacted]" in cleaned
    for part in secret_fragments(secret):
        assert part not in cleaned


def test_short_common_parts_are_kept() -> None:
    """Path words such as 'services' and short ids are not treated as secret."""
    fragments = secret_fragments("https://hooks.slack.com/services/T0/B0/Xq9sPz71LmN2oKw")
    assert "services" not in fragments
    assert "T0" not in fragments
    assert secret_fragments("sqlite:///var/lib/app/app.db") == {"sqlite:///var/lib/app/app.db"}
