"""The workflow keys in rules.yaml: each mistake reported exactly, with its location; what they
compile to; and `relay check`'s renders of keys, time zones and digests against the samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from relay.config import load_config
from relay.config.model import Mode
from relay.config.samples import Sample, render_all
from relay.workflow.spec import Timing
from tests.config.test_loader import errors_for
from tests.conftest import TEST_ENV

RULES = """\
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
  slack:
    type: slack
    webhook_url: ${SLACK_WEBHOOK_URL}
rules:
  - name: onboarding
    events: user.created
    cancel_on: [user.deleted]
    key: "{{ data.id }}"
    send:
      - sink: email
        template: welcome.yaml
        to: "{{ primary_email(data) }}"
      - sink: email
        template: welcome.yaml
        to: "{{ primary_email(data) }}"
        delay: 3d
        window:
          days: mon-fri
          hours: "09:00-17:00"
          timezone: "{{ data.public_metadata.timezone }}"
          default_timezone: Europe/Berlin
  - name: signups
    events: user.created
    digest: {window: 10m, max: 50, first: now}
    send:
      - sink: slack
        template: digest.yaml
"""
TEMPLATES = {
    "welcome.yaml": 'subject: "Hi {{ data.id }}"\ntext: "Hello"\n',
    "digest.yaml": (
        "text: \"{{ count }} sign-ups: {{ events | map(attribute='data.id') | join(', ') }}\"\n"
    ),
}


def errors(tmp_path: Path, old: str, new: str, mode: Mode = "serve") -> list[str]:
    assert old in RULES, old
    return errors_for(tmp_path, RULES.replace(old, new, 1), templates=TEMPLATES, mode=mode)


def test_the_workflow_rules_load_and_compile(tmp_path: Path) -> None:
    """Valid workflow keys load without a warning: the sends carry their timing, the rule its
    cancel and digest."""
    assert errors(tmp_path, "version: 1", "version: 1") == []
    config = load_config(tmp_path / "rules.yaml", tmp_path / "templates", env=TEST_ENV)
    onboarding, signups = config.rules
    assert onboarding.sends[0].timing is None
    timing = onboarding.sends[1].timing
    assert isinstance(timing, Timing)
    assert timing.delay_s == 3 * 86400
    assert timing.window is not None
    assert timing.window.describe() == (
        "mon-fri 09:00-17:00 the event's {{ data.public_metadata.timezone }} (else Europe/Berlin)"
    )
    assert onboarding.workflow.cancel is not None
    assert onboarding.workflow.cancel.patterns == ("user.deleted",)
    digest = signups.workflow.digest
    assert digest is not None
    assert (digest.window_s, digest.max, digest.lead) == (600, 50, True)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("delay: 3d", "delay: 400d", ["rules.yaml:26:16: delay: 400d is more than 365d"]),
        ("delay: 3d", "delay: 3", ["rules.yaml:26:16: delay: 3 has no unit: write 3s, or another"
                                   " unit (15m, 1h, 3d)"]),
        ("delay: 3d", "delay: soon", ["rules.yaml:26:16: delay: 'soon' is not a duration: write a"
                                      " number and a unit, s, m, h, d or w (30s, 15m, 1h, 3d)"]),
        ("days: mon-fri", "days: mon-fry", ["rules.yaml:28:17: days: 'fry' is not a day: write mon,"
                                            " tue, wed, thu, fri, sat or sun (a range: mon-fri)"]),
        ('hours: "09:00-17:00"', 'hours: "17:00-09:00"',
         ["rules.yaml:29:18: hours: '17:00-09:00': the window must close after it opens, on the"
          " same day (for a night window, use two rules or 00:00-06:00 and 22:00-24:00 on two"
          " sends)"]),
        ("default_timezone: Europe/Berlin", "default_timezone: Europe/Berln",
         ["rules.yaml:31:29: default_timezone: unknown time zone 'Europe/Berln' (did you mean"
          " 'Europe/Berlin'?) (an IANA name such as Europe/Berlin, or a template naming the"
          " event's)"]),
        ('timezone: "{{ data.public_metadata.timezone }}"', "timezone: Europe/Paaris",
         ["rules.yaml:30:21: timezone: unknown time zone 'Europe/Paaris' (did you mean"
          " 'Europe/Paris'?) (an IANA name such as Europe/Berlin, or a template naming the"
          " event's)"]),
        ('timezone: "{{ data.public_metadata.timezone }}"', 'timezone: "{{ data.tz "',
         ["rules.yaml:30:21: timezone: malformed template: unexpected end of template, expected"
          " 'end of print statement'."]),
        ('    key: "{{ data.id }}"\n', "",
         ["rules.yaml:15:5: missing required key 'key' (with cancel_on: the template that relates"
          ' a cancelling event to the ones it cancels, e.g. "{{ data.id }}")']),
        ("    cancel_on: [user.deleted]\n", "",
         ["rules.yaml:17:10: key: relates events for cancel_on; this rule has no cancel_on"]),
        ("cancel_on: [user.deleted]", "cancel_on: [user deleted]",
         ["rules.yaml:17:17: bad event pattern 'user deleted': use event names with '*' and '?'"
          " wildcards only (e.g. organizationMembership.*)"]),
        ("cancel_on: [user.deleted]", "cancel_on: [user.delted]",
         ["rules.yaml:17:17: warning: cancel_on pattern 'user.delted' matches no known event type"
          " (did you mean 'user.deleted'?)"]),
        ('key: "{{ data.id }}"', 'key: "{{ data.id"',
         ["rules.yaml:18:10: key: malformed template: unexpected end of template, expected 'end"
          " of print statement'."]),
        ("digest: {window: 10m, max: 50, first: now}", "digest: {window: 0s}",
         ["rules.yaml:34:22: window: 0s is less than 1s"]),
        ("digest: {window: 10m, max: 50, first: now}", "digest: {window: 10m, max: 0}",
         ["rules.yaml:34:32: max: Input should be greater than or equal to 1"]),
        ("digest: {window: 10m, max: 50, first: now}", "digest: {window: 10m, first: later}",
         ["rules.yaml:34:34: first: Input should be 'digest' or 'now'"]),
        ("digest: {window: 10m, max: 50, first: now}", "digest: {max: 5}",
         ["rules.yaml:34:5: missing required key 'window'"]),
    ],
)  # fmt: skip
def test_each_workflow_mistake_is_reported_where_it_is(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    assert errors(tmp_path, old, new) == expected


def test_a_sends_window_mistake_is_reported_at_that_send_when_an_earlier_send_failed(
    tmp_path: Path,
) -> None:
    """The first send's broken template leaves the second one's window error at the second
    send (not at the first, which has no window)."""
    rules = RULES.replace("template: welcome.yaml", "template: nope.yaml", 1)
    rules = rules.replace("Europe/Berlin", "Europe/Berln", 1)
    assert errors_for(tmp_path, rules, templates=TEMPLATES) == [
        "rules.yaml:21:19: template 'nope.yaml' not found in templates/ (did you mean"
        " 'welcome.yaml'?)",
        "rules.yaml:31:29: default_timezone: unknown time zone 'Europe/Berln' (did you mean"
        " 'Europe/Berlin'?) (an IANA name such as Europe/Berlin, or a template naming the"
        " event's)",
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    digest: {", "    delay: 1h\n    digest: {",
         ["rules.yaml:34:12: delay cannot be combined with digest (a digest is sent when its"
          " window ends, as one message)"]),
        ("    digest: {", '    once: "{{ data.id }}"\n    digest: {',
         ["rules.yaml:34:11: once cannot be combined with digest (a digest is sent when its"
          " window ends, as one message)"]),
        ("        template: digest.yaml\n", "        template: digest.yaml\n        delay: 5m\n",
         ["rules.yaml:38:16: delay cannot be set on a send of a digest (a rule-level window is)"]),
        ("    digest: {window: 10m, max: 50, first: now}\n",
         '    once: "{{ data.id }}"\n    throttle: {key: "{{ data.id }}", per: 1d}\n',
         ["rules.yaml:35:15: use once or throttle, not both"]),
        ("    digest: {window: 10m, max: 50, first: now}\n",
         '    throttle: {key: "x", per: 1d, max: 0}\n',
         ["rules.yaml:34:40: max: Input should be greater than or equal to 1"]),
        ("    digest: {window: 10m, max: 50, first: now}\n", '    throttle: {key: "x"}\n',
         ["rules.yaml:34:5: missing required key 'per'"]),
    ],
)  # fmt: skip
def test_workflow_keys_that_do_not_go_together_are_refused(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    assert errors(tmp_path, old, new) == expected


def render(
    tmp_path: Path, rules: str, samples: Sequence[Mapping[str, object]], **templates: str
) -> list[str]:
    """`relay check`'s renders (with ``templates`` besides the test's): every diagnostic."""
    errors_for(tmp_path, rules, templates={**TEMPLATES, **templates})
    config = load_config(tmp_path / "rules.yaml", tmp_path / "templates", env=TEST_ENV)
    found = render_all(config, [Sample(f"samples/{i}.json", e) for i, e in enumerate(samples)], "s")
    return [str(d).replace(str(tmp_path) + "/", "") for d in found]


USER = {"type": "user.created", "data": {"id": "user_1", "public_metadata": {"timezone": "UTC"}}}


def test_check_renders_a_digest_over_a_batch_of_the_samples(tmp_path: Path) -> None:
    """A digest's template is rendered over a batch of every sample its rule matches (it sees
    ``events`` and ``count``); one that would fail with them fails `relay check`."""
    other = {"type": "user.created", "data": {"id": "user_2", "public_metadata": {}}}
    assert render(tmp_path, RULES, [USER, other]) == [
        "rules.yaml:30:1: warning: rule 'onboarding': its time zone"
        " ({{ data.public_metadata.timezone }}) names none: the default Europe/Berlin applies"
        " (sample 1.json)"
    ]
    bad = RULES.replace("template: digest.yaml", "template: bad.yaml")
    found = render(tmp_path, bad, [USER], **{"bad.yaml": 'text: "{{ events[0].data.nickname }}"\n'})
    assert found == [
        "templates/bad.yaml:1:1: undefined variable: 'dict object' has no attribute 'nickname'"
        " (rule 'signups', a digest of 1 sample events)"
    ]


def test_check_renders_the_keys_against_the_samples(tmp_path: Path) -> None:
    """A key that fails for a sample is an error (its deliveries could not be cancelled); the
    cancel key is rendered for the cancelling samples too."""
    rules = RULES.replace('key: "{{ data.id }}"', 'key: "{{ data.user.id }}"')
    deleted = {"type": "user.deleted", "data": {"id": "user_1", "deleted": True}}
    assert render(tmp_path, rules, [USER, deleted]) == [
        "rules.yaml:18:1: rule 'onboarding': key does not render: undefined variable: 'dict"
        " object' has no attribute 'user' (sample 0.json)",
        "rules.yaml:18:1: rule 'onboarding': key does not render: undefined variable: 'dict"
        " object' has no attribute 'user' (sample 1.json)",
    ]
