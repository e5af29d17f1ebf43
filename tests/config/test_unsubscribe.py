"""`unsubscribe:` in rules.yaml and the settings its links need: each mistake reported exactly,
where it is used; an unset secret is an error for `relay serve` and a warning for `relay check`
(which renders placeholder links); what it compiles to; the path it reserves."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import Config, load_config
from relay.config.model import Mode
from relay.config.samples import Sample, render_all
from tests.config.test_loader import errors_for
from tests.conftest import TEST_ENV

SECRET = "Zk3pQ8vR1tX6yB9mN2cL5hJ7gD4sA0wE"
LINKS = {"RELAY_UNSUBSCRIBE_SECRET": SECRET, "RELAY_PUBLIC_URL": "https://relay.acme.example"}
BASE_ENV = {k: v for k, v in TEST_ENV.items() if k not in LINKS}
RULES = """\
version: 1
sources:
  clerk:
    path: {path}
    secret: ${{CLERK_WEBHOOK_SIGNING_SECRET}}
sinks:
  email:
    type: resend
    api_key: ${{RESEND_API_KEY}}
    from: Acme <hello@acme.example>
  slack:
    type: slack
    webhook_url: ${{SLACK_WEBHOOK_URL}}
rules:
  - name: onboarding
    events: user.created
    unsubscribe: {category}
    send:
      - sink: email
        template: welcome.yaml
        to: "{{{{ primary_email(data) }}}}"
        unsubscribe: false
      - sink: email
        template: tips.yaml
        to: "{{{{ primary_email(data) }}}}"
      - sink: slack
        template: alert.yaml
"""
TEMPLATES = {
    "welcome.yaml": 'subject: "Welcome"\ntext: "Hello"\n',
    "tips.yaml": 'subject: "Tips"\ntext: "No more tips: {{ unsubscribe_url }}"\n',
    "alert.yaml": 'text: "New sign-up"\n',
}


def rules(category: str = "onboarding", path: str = "/webhooks/clerk") -> str:
    return RULES.format(category=category, path=path)


def problems(tmp_path: Path, text: str, env: dict[str, str], mode: Mode = "serve") -> list[str]:
    return errors_for(tmp_path, text, {**BASE_ENV, **env}, TEMPLATES, mode)


def load(tmp_path: Path, env: dict[str, str], text: str | None = None) -> Config:
    (tmp_path / "templates").mkdir(exist_ok=True)
    for name, template in TEMPLATES.items():
        (tmp_path / "templates" / name).write_text(template)
    (tmp_path / "rules.yaml").write_text(text or rules())
    return load_config(tmp_path / "rules.yaml", tmp_path / "templates", env={**BASE_ENV, **env})


UNSET_SECRET = (
    "rules.yaml:17:18: {}RELAY_UNSUBSCRIBE_SECRET is not set: the one-click unsubscribe links"
    " need it (32 random characters or more, e.g. `openssl rand -base64 32`)"
)
UNSET_URL = (
    "rules.yaml:17:18: {}RELAY_PUBLIC_URL is not set: the one-click links of emails point there"
    " (the https:// address where relay's public port is reached)"
)


def test_serve_refuses_a_rule_with_unsubscribe_without_its_settings(tmp_path: Path) -> None:
    """Both unset: two errors, at the rule's `unsubscribe:`."""
    assert problems(tmp_path, rules(), {}) == [UNSET_SECRET.format(""), UNSET_URL.format("")]


@pytest.mark.parametrize("mode", ["check", "dry-run"])
def test_check_and_dry_run_only_warn_and_render_placeholder_links(
    tmp_path: Path, mode: Mode
) -> None:
    """`relay check` needs no secrets: warnings, and links that look right and work nowhere."""
    assert problems(tmp_path, rules(), {}, mode) == [
        UNSET_SECRET.format("warning: "),
        UNSET_URL.format("warning: "),
    ]
    templates = tmp_path / "templates"
    config = load_config(tmp_path / "rules.yaml", templates, env=BASE_ENV, mode=mode)
    assert config.unsubscribe is not None
    assert config.unsubscribe.placeholder
    tips = config.rules[0].sends[1].render(USER)
    assert tips["headers"]["List-Unsubscribe"].startswith("<https://RELAY_PUBLIC_URL/unsubscribe/")


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"RELAY_UNSUBSCRIBE_SECRET": "changeme"},
         "RELAY_UNSUBSCRIBE_SECRET is too weak (8 characters, 7 different): use at least 32"
         " random characters, e.g. the output of `openssl rand -base64 32`"),
        ({"RELAY_UNSUBSCRIBE_SECRET_PREVIOUS": "x" * 40},
         "RELAY_UNSUBSCRIBE_SECRET_PREVIOUS is too weak (40 characters, 1 different): use at"
         " least 32 random characters, e.g. the output of `openssl rand -base64 32`"),
        ({"RELAY_PUBLIC_URL": "http://relay.acme.example"},
         "RELAY_PUBLIC_URL must be https:// (RFC 8058: mailbox providers follow one-click links"
         " over https only); http:// is accepted for localhost alone: 'http://relay.acme.example'"),
        ({"RELAY_PUBLIC_URL": "https://relay.acme.example/?x=1"},
         "RELAY_PUBLIC_URL must be a plain URL: no query, fragment or user:"
         " 'https://relay.acme.example/?x=1'"),
        ({"RELAY_PUBLIC_URL": "relay.acme.example"},
         "RELAY_PUBLIC_URL is not an http(s) URL: 'relay.acme.example'"),
        ({"RELAY_UNSUBSCRIBE_MAILTO": "unsubscribe"},
         "RELAY_UNSUBSCRIBE_MAILTO is not an email address: 'unsubscribe'"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("mode", ["serve", "check"])
def test_a_malformed_setting_is_an_error_even_for_check(
    tmp_path: Path, env: dict[str, str], error: str, mode: Mode
) -> None:
    found = problems(tmp_path, rules(), {**LINKS, **env}, mode)
    assert found == [f"rules.yaml:17:18: {error}"]
    assert "changeme" not in "".join(found)  # a secret is never quoted


def test_http_on_localhost_is_a_warning_for_trying_it_out(tmp_path: Path) -> None:
    env = {**LINKS, "RELAY_PUBLIC_URL": "http://127.0.0.1:8000/"}
    assert problems(tmp_path, rules(), env) == [
        "rules.yaml:17:18: warning: RELAY_PUBLIC_URL is http://: mailbox providers offer"
        " one-click unsubscribe for https links only (fine for trying relay on this machine)"
    ]
    config = load(tmp_path, env)
    assert config.unsubscribe is not None
    assert config.unsubscribe.public_url == "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    ("category", "error"),
    [
        ("all", "unsubscribe: 'all' is the scope of bounces and complaints; name the category"
                " of these emails (onboarding, newsletter, ...): a link unsubscribes from its"
                " category"),
        ("Onboarding", "unsubscribe: 'Onboarding' is not a category name (lower-case letters,"
                       " digits, '-', '_' and '.'; at most 64)"),
        ("true", "unsubscribe: Input should be a valid string"),
    ],
)  # fmt: skip
def test_a_category_must_be_a_name_and_not_all(tmp_path: Path, category: str, error: str) -> None:
    """Said once, at the rule's key, however many of its sends take it."""
    assert problems(tmp_path, rules(category), LINKS) == [f"rules.yaml:17:18: {error}"]
    two = rules(category).replace("        unsubscribe: false\n", "")
    assert problems(tmp_path, two, LINKS) == [f"rules.yaml:17:18: {error}"]


def test_only_email_sends_take_unsubscribe(tmp_path: Path) -> None:
    text = rules().replace(
        "        template: alert.yaml\n", "        template: alert.yaml\n        unsubscribe: x\n"
    )
    assert problems(tmp_path, text, LINKS) == [
        "rules.yaml:28:22: unsubscribe: only email sends take it (sink 'slack' is a slack sink)"
    ]
    alerts_only = rules().replace(
        """      - sink: email
        template: welcome.yaml
        to: "{{ primary_email(data) }}"
        unsubscribe: false
      - sink: email
        template: tips.yaml
        to: "{{ primary_email(data) }}"
""",
        "",
    )
    assert problems(tmp_path, alerts_only, LINKS) == [
        "rules.yaml:17:18: unsubscribe: this rule sends no email"
    ]


USER = {
    "type": "user.created",
    "data": {
        "primary_email_address_id": "idn_1",
        "email_addresses": [{"id": "idn_1", "email_address": "ada@example.com"}],
    },
}


def test_a_rule_s_category_applies_to_its_email_sends_unless_a_send_opts_out(
    tmp_path: Path,
) -> None:
    """The tips get the link and headers; the welcome (`unsubscribe: false`) and the Slack
    alert get neither."""
    config = load(tmp_path, LINKS)
    welcome, tips, alert = config.rules[0].sends
    assert (welcome.unsubscribe, alert.unsubscribe) == (None, None)
    assert tips.unsubscribe is not None
    assert tips.unsubscribe.category == "onboarding"
    rendered = tips.render(USER)
    url = rendered["headers"]["List-Unsubscribe"].strip("<>")
    assert rendered["text"] == f"No more tips: {url}"
    assert url.startswith("https://relay.acme.example/unsubscribe/")
    assert "headers" not in welcome.render(USER)


def test_the_secrets_are_redacted_everywhere(tmp_path: Path) -> None:
    previous = "mW7xC2vB9nQ4kL1pR8tY5uI3oE6aS0dF"
    config = load(tmp_path, {**LINKS, "RELAY_UNSUBSCRIBE_SECRET_PREVIOUS": previous})
    assert {SECRET, previous} <= config.secret_values


def test_a_valid_secret_serves_old_links_when_no_rule_uses_unsubscribe(tmp_path: Path) -> None:
    """Links already sent keep working after the rule dropped its category; without the
    secret there is nothing to serve; a malformed one is an error all the same."""
    unused = (
        rules().replace("    unsubscribe: onboarding\n", "").replace("{{ unsubscribe_url }}", "bye")
    )
    assert load(tmp_path, LINKS, unused).unsubscribe is not None
    assert load(tmp_path, {}, unused).unsubscribe is None
    assert problems(tmp_path, unused, {"RELAY_UNSUBSCRIBE_SECRET": "weak"}) == [
        "rules.yaml:1:1: RELAY_UNSUBSCRIBE_SECRET is too weak (4 characters, 4 different): use at"
        " least 32 random characters, e.g. the output of `openssl rand -base64 32`"
    ]


def test_a_template_using_unsubscribe_url_without_a_category_fails_relay_check(
    tmp_path: Path,
) -> None:
    config = load(tmp_path, LINKS, rules().replace("template: welcome.yaml", "template: tips.yaml"))
    [problem] = render_all(config, [Sample("user.created.json", USER)], "samples")
    assert "undefined variable: 'unsubscribe_url' is undefined" in problem.message


def test_the_unsubscribe_path_is_reserved(tmp_path: Path) -> None:
    assert problems(tmp_path, rules(path="/unsubscribe/clerk"), LINKS) == [
        "rules.yaml:4:11: path /unsubscribe/clerk is reserved for relay's unsubscribe links"
    ]
