"""Sources in rules.yaml: registered by entry point, validated by their type, with located errors;
`relay check` and `send-test` on them, and the shipped Resend example."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest
import respx
from standardwebhooks.webhooks import Webhook as StandardWebhook

from relay.cli import main
from relay.config import load_config
from relay.errors import ConfigError
from tests.conftest import ROOT, TEST_SECRET
from tests.sources.helpers import CLERK_EVENT, ENV, EXAMPLE, RULES, TYPES, load, write


def test_built_in_source_types_are_registered() -> None:
    """The four built-ins come from the relay.sources entry-point group, like any plugin."""
    assert sorted(TYPES) == ["hmac", "klaviyo", "standard-webhooks", "svix"]
    assert [name for name, t in TYPES.items() if t.batches] == ["klaviyo"]


def diagnostics(
    tmp_path: Path, rules: str, env: Mapping[str, str] = ENV, mode: str = "serve"
) -> list[str]:
    path = write(tmp_path, rules)
    try:
        config = load_config(path, tmp_path / "templates", env=env, mode=mode)  # type: ignore[arg-type]
    except ConfigError as exc:
        return [str(d).replace(str(tmp_path) + "/", "") for d in exc.diagnostics]
    return [str(d).replace(str(tmp_path) + "/", "") for d in config.warnings]


def test_every_source_type_loads_from_rules_yaml(tmp_path: Path) -> None:
    """Each source's verify: names its type; its settings are that type's model; every secret is
    known for redaction and never shows in the config's repr."""
    config = load(tmp_path)
    assert {n: s.type.name for n, s in config.sources.items()} == {
        "clerk": "svix",
        "partner": "standard-webhooks",
        "shop": "hmac",
        "klaviyo": "klaviyo",
    }
    assert config.warnings == ()
    for key in ("CLERK_WEBHOOK_SIGNING_SECRET", "PARTNER_SECRET", "SHOP_SECRET", "KLAVIYO_SECRET"):
        assert ENV[key] in config.secret_values
        assert ENV[key] not in repr(config)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    secret: ${CLERK_WEBHOOK_SIGNING_SECRET}\n",
            "    secrt: ${CLERK_WEBHOOK_SIGNING_SECRET}\n",
            [
                "rules.yaml:3:3: missing required key 'secret'",
                "rules.yaml:5:5: unknown key 'secrt' (did you mean 'secret'?)",
            ],
        ),
        (
            "verify: klaviyo",
            "verify: klavio",
            ["rules.yaml:20:13: unknown source type 'klavio' (did you mean 'klaviyo'?)"],
        ),
        (
            "verify: hmac",
            "verify: shopify",
            [
                "rules.yaml:12:13: unknown source type 'shopify' (one of: hmac, klaviyo, "
                "standard-webhooks, svix)"
            ],
        ),
        (
            "verify: hmac",
            "verify: [hmac]",
            [
                "rules.yaml:12:13: verify: name a source type (one of: hmac, klaviyo, "
                "standard-webhooks, svix)"
            ],
        ),
        (
            "    encoding: base64\n",
            "    encodng: base64\n",
            ["rules.yaml:15:5: unknown key 'encodng' (did you mean 'encoding'?)"],
        ),
        (
            "    encoding: base64\n",
            "    encoding: base32\n",
            ["rules.yaml:15:15: encoding: Input should be 'hex' or 'base64'"],
        ),
        (
            "    encoding: base64\n",
            "    encoding: base64\n    signed: '{timestamp}.{body}'\n",
            [
                "rules.yaml:11:5: signed must use {timestamp} exactly when timestamp_header is "
                "set (an unsigned timestamp proves nothing)"
            ],
        ),
        (
            "    encoding: base64\n",
            "    encoding: base64\n    signed: '{body}.{nonce}'\n",
            ["rules.yaml:16:13: signed: unknown placeholder {nonce} (use body, timestamp or id)"],
        ),
        (
            "    id_header: X-Shop-Webhook-Id\n",
            "",
            ["rules.yaml:11:5: set where the event id comes from: id_header or id_field (one)"],
        ),
        (
            "    encoding: base64\n",
            "    encoding: base64\n    tolerance_s: 60\n",
            ["rules.yaml:11:5: tolerance_s needs a timestamp_header"],
        ),
        (
            "    path: /webhooks/klaviyo\n",
            "    path: /webhooks/shop\n",
            ["rules.yaml:19:11: path /webhooks/shop is already served by source 'shop'"],
        ),
        (
            "    path: /webhooks/klaviyo\n",
            "    path: /metrics\n",
            ["rules.yaml:19:11: path /metrics is reserved for relay itself"],
        ),
        (
            "    verify: klaviyo\n",
            "    verify: klaviyo\n    tolerance_s: 0\n",
            ["rules.yaml:21:18: tolerance_s: Input should be greater than or equal to 1"],
        ),
    ],
)
def test_source_errors_are_located(tmp_path: Path, old: str, new: str, expected: list[str]) -> None:
    """Source mistakes are reported like sink ones: rules.yaml:LINE:COL: message, with hints."""
    assert old in RULES
    assert diagnostics(tmp_path, RULES.replace(old, new, 1)) == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("CLERK_WEBHOOK_SIGNING_SECRET", "not-a-secret-value",
         "rules.yaml:5:13: secret: signing secret must start with 'whsec_' (copy it from the "
         "Clerk dashboard: Webhooks → endpoint → Signing Secret)"),
        ("PARTNER_SECRET", "whsec_c2hvcnQ=",
         "rules.yaml:9:13: secret: signing secret is too short (5 bytes; expected at least 16, "
         "Clerk's are 24)"),
        ("SHOP_SECRET", "'shop-secret-0123456789abcdef'",
         "rules.yaml:13:13: secret: secret is wrapped in quotes; remove the quotes"),
        ("KLAVIYO_SECRET", "tooshort-secret",
         "rules.yaml:21:13: secret: secret is too short (15 characters; expected at least 16)"),
    ],
)  # fmt: skip
def test_bad_secrets_are_located_and_never_shown(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    """Each type checks its secret at load and says what is wrong without quoting it."""
    assert diagnostics(tmp_path, RULES, env={**ENV, key: value}) == [message]
    assert value.strip("'") not in message


def test_unset_source_variables_by_mode(tmp_path: Path) -> None:
    """An unset secret: a warning for check, an error for serve and for dry-run (verification
    stays on); a misspelt key whose value is unset is still reported in check."""
    env = {k: v for k, v in ENV.items() if k != "KLAVIYO_SECRET"}
    message = "rules.yaml:21:13: {}environment variable KLAVIYO_SECRET is not set"
    assert diagnostics(tmp_path, RULES, env, "check") == [message.format("warning: ")]
    assert diagnostics(tmp_path, RULES, env, "serve") == [message.format("")]
    assert diagnostics(tmp_path, RULES, env, "dry-run") == [message.format("")]
    typo = RULES.replace("    secret: ${KLAVIYO_SECRET}", "    secrt: ${KLAVIYO_SECRET}")
    assert diagnostics(tmp_path, typo, env, "check") == [
        "rules.yaml:18:3: missing required key 'secret'",
        "rules.yaml:21:12: warning: environment variable KLAVIYO_SECRET is not set",
        "rules.yaml:21:5: unknown key 'secrt' (did you mean 'secret'?)",
    ]


def test_check_config_with_unset_secret_knows_the_source_is_incomplete(tmp_path: Path) -> None:
    """Under check, a source whose secret is unset is kept (for the summary) but marked
    incomplete; ingest answers it 503 instead of building a verifier without a key."""
    env = {k: v for k, v in ENV.items() if k != "KLAVIYO_SECRET"}
    config = load_config(write(tmp_path, RULES), tmp_path / "templates", env=env, mode="check")
    assert not config.sources["klaviyo"].complete
    assert config.sources["shop"].complete


def test_event_pattern_warnings_know_each_senders_types(tmp_path: Path) -> None:
    """A svix source knows Clerk's and Resend's event types (no warning for email.bounced);
    a source with open-ended types (hmac, klaviyo, ...) turns the typo warning off."""
    only_svix = textwrap.dedent("""\
        version: 1
        sources:
          resend:
            path: /webhooks/resend
            secret: ${CLERK_WEBHOOK_SIGNING_SECRET}
        sinks:
          hook:
            type: http
            url: http://127.0.0.1:9/x
        rules:
          - name: bounces
            events: [email.bounced, email.complained, user.create]
            send:
              - sink: hook
        """)
    assert diagnostics(tmp_path, only_svix) == [
        "rules.yaml:12:47: warning: event pattern 'user.create' matches no known Clerk event "
        "type (did you mean 'user.created'?)"
    ]
    with_klaviyo = only_svix.replace(
        "sinks:",
        "  klaviyo:\n    path: /k\n    verify: klaviyo\n    secret: ${KLAVIYO_SECRET}\nsinks:",
    )
    assert diagnostics(tmp_path, with_klaviyo) == []


def test_relay_check_cli_reports_a_located_source_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`relay check` exits 1 and prints the located source error."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    rules = write(tmp_path, RULES.replace("verify: klaviyo", "verify: klavyo"))
    assert main(["check", "--rules", str(rules), "--templates", str(tmp_path / "templates")]) == 1
    err = capsys.readouterr().err
    assert f"{rules}:20:13: unknown source type 'klavyo' (did you mean 'klaviyo'?)" in err
    assert err.endswith("relay check: invalid configuration\n")


def test_send_test_signs_for_svix_and_standard_webhooks_sources_only(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    respx_mock: respx.MockRouter,
) -> None:
    """send-test signs with the source's secret under its header names (webhook-* for a Standard
    Webhooks source, verifiable by the reference library); other types get a clear message."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    rules = write(tmp_path, RULES)
    route = respx_mock.post("http://relay.test/webhooks/partner").mock(
        return_value=httpx.Response(200, json={"status": "accepted"})
    )
    sample = tmp_path / "event.json"
    sample.write_bytes(CLERK_EVENT)
    common = ["--rules", str(rules), "--templates", str(tmp_path / "templates")]
    url = "http://relay.test/webhooks/partner"
    assert main(["send-test", str(sample), "--source", "partner", "--url", url, *common]) == 0
    request = route.calls.last.request
    assert not [name for name in request.headers if name.startswith("svix-")]
    StandardWebhook(ENV["PARTNER_SECRET"]).verify(request.content, dict(request.headers))
    capsys.readouterr()
    assert main(["send-test", str(sample), "--source", "klaviyo", *common]) == 2
    assert capsys.readouterr().err == (
        "relay send-test: source 'klaviyo' is a klaviyo source; send-test supports svix and "
        "standard-webhooks sources\n"
    )


# --- the shipped example: Resend bounces and complaints → Slack --------------------------------


def test_resend_example_passes_check_and_names_the_address(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/resend-bounces passes `relay check` (rendering its samples), and its Slack alert
    names the bounced address."""
    monkeypatch.setenv("RESEND_WEBHOOK_SECRET", TEST_SECRET)
    monkeypatch.setenv("SLACK_EMAIL_ALERTS_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/x")
    common = ["--rules", str(EXAMPLE / "rules.yaml"), "--templates", str(ROOT / "templates")]
    assert main(["check", *common, "--samples", str(EXAMPLE / "samples")]) == 0
    assert capsys.readouterr().out == (
        "relay check: OK (3 rules, 3 sends, 2 sinks, 3 sample events, 8 of 8 tests passed)\n"
    )
    for sample, text in [
        ("email.bounced.json", "Email bounced: ada@example.com (Welcome to Acme, Ada!)"),
        ("email.complained.json", "Spam complaint: grace@example.com (Your weekly summary)"),
    ]:
        assert main(["preview", *common, "--json", str(EXAMPLE / "samples" / sample)]) == 0
        results = json.loads(capsys.readouterr().out)
        [alert] = [r for r in results if r["rule"] == "email-bounce-alert"]
        assert alert["sends"][0]["payload"]["text"] == text
