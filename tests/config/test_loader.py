"""rules.yaml loading: every validation error, exactly, with its location, all at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from relay.config import load_config
from relay.config.model import Mode
from relay.errors import ConfigError
from tests.conftest import TEST_ENV, Project

BASE = """\
version: 1
sources:
  clerk:
    path: /webhooks/clerk
    secret: ${CLERK_WEBHOOK_SIGNING_SECRET}
sinks:
  email:
    type: resend
    api_key: ${RESEND_API_KEY}
    from: Acme <hello@acme.example>
  hook:
    type: http
    url: http://127.0.0.1:9/x
rules:
  - name: welcome
    events: user.created
    send:
      - sink: email
        template: welcome.yaml
        to: "{{ primary_email(data) }}"
  - name: sync
    events: [organizationMembership.*]
    send:
      - sink: hook
"""

WELCOME = """\
subject: "Hi {{ display_name(data) }}"
text: "Hello"
"""


def errors_for(
    tmp_path: Path,
    rules: str,
    env: dict[str, str] | None = None,
    templates: dict[str, str] | None = None,
    mode: Mode = "serve",
) -> list[str]:
    (tmp_path / "templates").mkdir(exist_ok=True)
    for name, text in (templates or {"welcome.yaml": WELCOME}).items():
        (tmp_path / "templates" / name).write_text(text)
    (tmp_path / "rules.yaml").write_text(rules)
    try:
        config = load_config(
            tmp_path / "rules.yaml",
            tmp_path / "templates",
            env=TEST_ENV if env is None else env,
            mode=mode,
        )
    except ConfigError as exc:
        return [str(d).replace(str(tmp_path) + "/", "") for d in exc.diagnostics]
    return [str(d).replace(str(tmp_path) + "/", "") for d in config.warnings]


def test_base_config_is_valid(tmp_path: Path) -> None:
    """The minimal config used by these tests loads with no error and no warning."""
    assert errors_for(tmp_path, BASE) == []


def test_shipped_config_loads(project: Project) -> None:
    """The shipped rules.yaml and templates load cleanly with every variable set."""
    config = load_config(project.rules, project.templates, env=TEST_ENV)
    assert [r.name for r in config.rules] == ["welcome-email", "signup-alert", "membership-sync"]
    assert config.warnings == ()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    events: user.created\n",
            "    events: user.created\n    colour: red\n",
            ["rules.yaml:17:5: unknown key 'colour'"],
        ),
        (
            "    url: http",
            "    ulr: http",
            [
                "rules.yaml:11:3: missing required key 'url'",
                "rules.yaml:13:5: unknown key 'ulr' (did you mean 'url'?)",
            ],
        ),
        (
            "type: resend",
            "type: resnd",
            ["rules.yaml:8:11: unknown sink type 'resnd' (did you mean 'resend'?)"],
        ),
        (
            "      - sink: hook",
            "      - sink: hok",
            ["rules.yaml:24:15: unknown sink 'hok' (did you mean 'hook'?)"],
        ),
        (
            "template: welcome.yaml",
            "template: welcom.yaml",
            [
                "rules.yaml:19:19: template 'welcom.yaml' not found in templates/ "
                "(did you mean 'welcome.yaml'?)"
            ],
        ),
        (
            "[organizationMembership.*]",
            "['organization Membership']",
            [
                "rules.yaml:22:14: bad event pattern 'organization Membership': use event names "
                "with '*' and '?' wildcards only (e.g. organizationMembership.*)"
            ],
        ),
        (
            "    events: user.created\n",
            "    events: user.created\n    when: data.id ==\n",
            ["rules.yaml:17:11: malformed condition: unexpected 'end of template'"],
        ),
        (
            "    from: Acme <hello@acme.example>\n",
            "",
            ["rules.yaml:7:3: missing required key 'from'"],
        ),
        (
            "  - name: sync",
            "  - name: welcome",
            ["rules.yaml:21:11: duplicate rule name 'welcome' (first used at line 15)"],
        ),
        (
            "    path: /webhooks/clerk\n",
            "    path: /webhooks/clerk\n    path: /other\n",
            ["rules.yaml:5:5: duplicate key 'path' (first defined at line 4)"],
        ),
        ("version: 1", "version: 2", ["rules.yaml:1:10: version: Input should be 1"]),
        (
            "    url: http://127.0.0.1:9/x\n",
            "    url: http://127.0.0.1:9/x\n    rate_limit_per_s: 0\n",
            ["rules.yaml:14:23: rate_limit_per_s: Input should be greater than 0"],
        ),
        (
            '        to: "{{ primary_email(data) }}"\n',
            "",
            ["rules.yaml:18:9: missing required key 'to'"],
        ),
    ],
)
def test_validation_error_is_located(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    """Each kind of mistake is reported once, as rules.yaml:LINE:COL: message."""
    assert old in BASE
    assert errors_for(tmp_path, BASE.replace(old, new, 1)) == expected


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    """Several independent mistakes are all reported in one run, in file order."""
    rules = (
        BASE.replace("type: resend", "type: resnd")
        .replace("      - sink: hook", "      - sink: hok")
        .replace("  - name: sync", "  - name: welcome")
    )
    assert errors_for(tmp_path, rules) == [
        "rules.yaml:8:11: unknown sink type 'resnd' (did you mean 'resend'?)",
        "rules.yaml:21:11: duplicate rule name 'welcome' (first used at line 15)",
        "rules.yaml:24:15: unknown sink 'hok' (did you mean 'hook'?)",
    ]


def test_yaml_11_traps_are_closed(tmp_path: Path) -> None:
    """`on:`/`yes` stay strings: a key named `on` is an unknown key, not the boolean True."""
    rules = BASE.replace("    events: user.created\n", "    events: user.created\n    on: yes\n")
    assert errors_for(tmp_path, rules) == ["rules.yaml:17:5: unknown key 'on'"]


ALIAS_BOMB = """\
a: &a [x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: [*e, *e, *e, *e, *e, *e, *e, *e, *e]
"""
ANCHOR_MESSAGE = "YAML anchors and aliases are not supported; write the value out"


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (ALIAS_BOMB, f"rules.yaml:1:4: an anchor (&name): {ANCHOR_MESSAGE}"),
        (BASE.replace("    path: /webhooks/clerk", "    path: &p /webhooks/clerk"),
         f"rules.yaml:4:11: an anchor (&name): {ANCHOR_MESSAGE}"),
        (BASE.replace("    url: http://127.0.0.1:9/x", "    url: *nowhere"),
         f"rules.yaml:13:10: an alias (*name): {ANCHOR_MESSAGE}"),
    ],
)  # fmt: skip
def test_yaml_anchors_and_aliases_are_refused(tmp_path: Path, rules: str, expected: str) -> None:
    """Anchors and aliases are refused where they appear, as merge keys are: six lines of nested
    aliases (a billion laughs: 9^6 values) are one located error, never expanded."""
    assert errors_for(tmp_path, rules) == [expected]


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    """A YAML syntax error names its line and column."""
    assert errors_for(tmp_path, "rules:\n  - name: [unclosed\n") == [
        "rules.yaml:3:1: invalid YAML: expected ',' or ']', but got '<stream end>'"
    ]


def test_missing_env_is_an_error_for_serve_and_a_warning_for_check(tmp_path: Path) -> None:
    """An unset ${VAR} is reported at the line that references it, by severity per mode."""
    env = {k: v for k, v in TEST_ENV.items() if k != "RESEND_API_KEY"}
    message = "rules.yaml:9:14: {}environment variable RESEND_API_KEY is not set"
    assert errors_for(tmp_path, BASE, env=env) == [message.format("")]
    assert errors_for(tmp_path, BASE, env=env, mode="check") == [message.format("warning: ")]


def test_env_default_and_escape(tmp_path: Path) -> None:
    """${VAR:-default} falls back to the default; $${ is a literal ${."""
    rules = BASE.replace(
        "from: Acme <hello@acme.example>", "from: ${EMAIL_FROM:-Ops <o@x.example>}"
    )
    rules = rules.replace("url: http://127.0.0.1:9/x", "url: http://127.0.0.1:9/x?q=$${a}")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "welcome.yaml").write_text(WELCOME)
    (tmp_path / "rules.yaml").write_text(rules)
    config = load_config(tmp_path / "rules.yaml", tmp_path / "templates", env=TEST_ENV)
    assert config.sinks["email"].settings.from_ == "Ops <o@x.example>"  # type: ignore[attr-defined]
    assert config.sinks["hook"].settings.url == "http://127.0.0.1:9/x?q=${a}"  # type: ignore[attr-defined]


def test_bad_signing_secret_is_reported_without_the_secret(tmp_path: Path) -> None:
    """A malformed signing secret is an error that says what is wrong but never shows it."""
    env = {**TEST_ENV, "CLERK_WEBHOOK_SIGNING_SECRET": "not-a-secret-value"}
    errors = errors_for(tmp_path, BASE, env=env)
    assert len(errors) == 1
    assert errors[0].startswith("rules.yaml:5:13: secret: signing secret must start with 'whsec_'")
    assert "not-a-secret-value" not in errors[0]


def test_template_errors_are_located_in_the_template_file(tmp_path: Path) -> None:
    """A Jinja syntax error, an unknown part and a missing part point into the template file."""
    broken = textwrap.dedent("""\
        subjct: "Hi"
        text: |
          Hello
          {% if data.x %}
        """)
    assert errors_for(tmp_path, BASE, templates={"welcome.yaml": broken}) == [
        "templates/welcome.yaml:1:1: unknown part 'subjct' for a resend message (did you mean "
        "'subject'?) (allowed: subject, html, text)",
        "templates/welcome.yaml:1:1: missing required part 'subject' for a resend message",
        "templates/welcome.yaml:4:1: Unexpected end of template. Jinja was looking for the "
        "following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be "
        "closed is 'if'.",
    ]


def test_sink_settings_are_validated_by_the_sink_type(tmp_path: Path) -> None:
    """A sink's own settings model validates its fields, located at the value."""
    rules = BASE.replace("url: http://127.0.0.1:9/x", "url: ftp://example.com/x")
    errors = errors_for(tmp_path, rules)
    assert len(errors) == 1
    assert errors[0].startswith("rules.yaml:13:10: url: ")


def test_retry_policy_defaults_and_overrides(tmp_path: Path) -> None:
    """Sinks get a default retry policy; a sink's retry block overrides it and is validated."""
    rules = BASE.replace("    type: http\n", "    type: http\n    retry:\n      max_attempts: 3\n")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "welcome.yaml").write_text(WELCOME)
    (tmp_path / "rules.yaml").write_text(rules)
    config = load_config(tmp_path / "rules.yaml", tmp_path / "templates", env=TEST_ENV)
    assert config.sinks["hook"].settings.retry.max_attempts == 3
    assert config.sinks["email"].settings.retry.max_attempts == 18
    bad = BASE.replace("    type: http\n", "    type: http\n    retry:\n      max_attempts: 0\n")
    assert errors_for(tmp_path, bad) == [
        "rules.yaml:14:21: max_attempts: Input should be greater than or equal to 1"
    ]


def test_unknown_event_type_pattern_is_a_warning(tmp_path: Path) -> None:
    """A pattern that matches no known Clerk event type warns, with a suggestion."""
    rules = BASE.replace("events: user.created", "events: user.create")
    assert errors_for(tmp_path, rules) == [
        "rules.yaml:16:13: warning: event pattern 'user.create' matches no known Clerk event "
        "type (did you mean 'user.created'?)"
    ]


def test_secrets_never_appear_in_config_repr(tmp_path: Path) -> None:
    """repr() of the loaded config holds no secret value."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "welcome.yaml").write_text(WELCOME)
    (tmp_path / "rules.yaml").write_text(BASE)
    config = load_config(tmp_path / "rules.yaml", tmp_path / "templates", env=TEST_ENV)
    text = repr(config)
    for secret in (TEST_ENV["RESEND_API_KEY"], TEST_ENV["CLERK_WEBHOOK_SIGNING_SECRET"]):
        assert secret not in text
        assert secret in config.secret_values


def retention_of(tmp_path: Path, block: str) -> float:
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "templates" / "welcome.yaml").write_text(WELCOME)
    (tmp_path / "rules.yaml").write_text(BASE + block)
    config = load_config(tmp_path / "rules.yaml", tmp_path / "templates", env=TEST_ENV)
    return config.retention_s


def test_retention_defaults_to_30_days_and_takes_a_duration(tmp_path: Path) -> None:
    """History (events, their deliveries and attempts) is kept 30 days unless `retention:` says."""
    assert retention_of(tmp_path, "") == 30 * 86400
    assert retention_of(tmp_path, "retention:\n  events: 90d\n") == 90 * 86400
    assert retention_of(tmp_path, "retention:\n  events: 28h\n") == 28 * 3600


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("retention:\n  events: 1d\n",
         "rules.yaml:26:11: events: 1d is shorter than 28h: Svix retries a message for up to"
         " ~28 h, and a purged event's retry would be accepted as new"),
        ("retention:\n  events: 30\n",
         "rules.yaml:26:11: events: 30 has no unit: write 30s, or another unit (15m, 1h, 3d)"),
        ("retention:\n  event: 30d\n", "rules.yaml:26:3: unknown key 'event'"),
    ],
)  # fmt: skip
def test_retention_shorter_than_the_dedup_window_is_a_located_error(
    tmp_path: Path, block: str, expected: str
) -> None:
    """A retention under 28 h (Svix's retry window), a bare number, a misspelt key: located."""
    assert errors_for(tmp_path, BASE + block) == [expected]
