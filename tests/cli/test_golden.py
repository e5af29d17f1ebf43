"""`relay test`: the golden tests of the rules, as a test runner reports them; `relay check`
runs them too."""

from __future__ import annotations

import shutil

import pytest

from relay.cli import main
from tests.conftest import ROOT, TEST_ENV, Project


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def tested(project: Project) -> Project:
    """The shipped project with its golden tests (rules.test.yaml)."""
    shutil.copy(ROOT / "rules.test.yaml", project.root / "rules.test.yaml")
    return project


def run(project: Project, *args: str) -> int:
    rules, templates = str(project.rules), str(project.templates)
    return main([args[0], "--rules", rules, "--templates", templates, *args[1:]])


def test_the_shipped_tests_pass(tested: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """Every shipped case passes: one PASS line each, a summary, exit 0."""
    assert run(tested, "test") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(tested.root / "rules.test.yaml")
    assert (
        "PASS  the welcome email goes to the primary address, not the first one in the list" in out
    )
    assert "PASS  a hostile name is escaped in the HTML email and in Slack" in out
    assert out[-1] == "7 passed, 0 failed"


@pytest.mark.parametrize("example", ["resend-bounces", "sql-sync"])
def test_the_examples_tests_pass(example: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each example ships golden tests of its rules, and they pass."""
    rules = ROOT / "examples" / example / "rules.yaml"
    assert main(["test", "--rules", str(rules), "--templates", str(ROOT / "templates")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(" passed, 0 failed")


def test_a_changed_template_fails_with_a_readable_diff(
    tested: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A template that now greets the first address (not the primary) fails its cases, each
    with what was expected and what was rendered; exit 1."""
    path = tested.templates / "welcome-email.yaml"
    text = path.read_text().replace("Welcome to Acme", "Welcome aboard")
    path.write_text(
        text.replace(
            "<strong>{{ primary_email(data) }}",
            "<strong>{{ data.email_addresses[0].email_address }}",
        )
    )
    assert run(tested, "test") == 1
    out = capsys.readouterr().out
    case = tested.root / "rules.test.yaml"
    assert (
        "FAIL  the welcome email goes to the primary address, not the first one in the list"
        f"  ({case}:5)\n"
        "      welcome-email -> email: subject is not the expected value\n"
        '        expected: "Welcome to Acme, Ada!"\n'
        '        rendered: "Welcome aboard, Ada!"\n'
        '      welcome-email -> email: html does not contain "<strong>ada@example.com</strong>"\n'
        "        the closest lines (of 14):\n"
        "        |    <strong>ada.old@example.org</strong>.</p>\n"
    ) in out
    assert "PASS  a phone-only user gets no welcome email, only the Slack alert" in out
    assert out.splitlines()[-1] == "5 passed, 2 failed"


def test_a_rule_that_no_longer_matches_says_why(
    tested: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A case expecting a rule that did not match shows the rule's reason."""
    tested.edit_rules("when: primary_email(data)", "when: data.banned")
    assert run(tested, "test") == 1
    out = capsys.readouterr().out
    assert (
        "      rules: expected [signup-alert, welcome-email], matched [signup-alert]\n"
        "        - welcome-email: not matched: condition `data.banned` is false: it is false\n"
    ) in out


def test_nothing_sent_fails_when_something_is_sent(
    tested: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A case that expects nothing sent fails, naming what was sent."""
    tested.edit_rules(
        "events: user.created\n    send:\n      - sink: slack",
        "events: user.*\n    send:\n      - sink: slack",
    )
    assert run(tested, "test") == 1
    out = capsys.readouterr().out
    assert "FAIL  a deleted user sends nothing" in out
    assert "      expected nothing sent; sent: signup-alert -> slack-signups\n" in out


def test_a_malformed_test_file_gives_every_located_error(
    tested: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """Problems in the test file are located (file:line:col) all at once; nothing runs; exit 1."""
    tests = tested.write(
        "rules.test.yaml",
        "tests:\n"
        "  - name: one\n"
        "    evnt: samples/user.created.json\n"
        "    expect: {}\n"
        "  - name: two\n"
        "    event: samples/missing.json\n"
        "    expect:\n"
        "      rules: [welcome-emial]\n"
        "      sends:\n"
        "        - sink: email\n"
        "          fields: {to: {contain: x}}\n"
        "  - name: three\n"
        "    event: '{\"type\": 1'\n"
        "    expect: {nothing_sent: true, sinks: [email]}\n",
    )
    assert run(tested, "test") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{tests}:2:5: missing required key 'event'",
        f"{tests}:3:5: unknown key 'evnt'",
        f"{tests}:6:12: cannot read event file {tested.root}/samples/missing.json: No such file "
        "or directory",
        f"{tests}:8:15: unknown rule 'welcome-emial' (did you mean 'welcome-email'?)",
        f"{tests}:11:24: to: unknown check 'contain' (did you mean 'contains'?) (use equals, "
        "contains, not_contains, regex, json; to compare with a mapping, write equals: {...})",
        f"{tests}:13:12: event: invalid JSON: Expecting ',' delimiter",
        f"{tests}:14:28: nothing_sent: true cannot go with rules, sinks or sends that expect a "
        "message",
        f"relay test: {tests} is malformed (7 problem(s))",
    ]


def test_invalid_yaml_in_the_test_file_is_located(
    tested: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """The test file is read by the strict YAML reader: a duplicate key is an error."""
    tests = tested.write("rules.test.yaml", "tests: []\ntests: []\n")
    assert run(tested, "test") == 1
    assert (
        f"{tests}:2:1: duplicate key 'tests' (first defined at line 1)" in capsys.readouterr().err
    )


def test_without_a_test_file_is_a_usage_error(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """No rules.test.yaml beside the rules: exit 2 and where it was looked for."""
    assert run(project, "test") == 2
    assert f"no test file at {project.root / 'rules.test.yaml'}" in capsys.readouterr().err


def test_check_runs_the_tests(tested: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """relay check runs the golden tests beside the rules and counts them in its summary."""
    assert run(tested, "check", "--samples", str(tested.samples)) == 0
    assert capsys.readouterr().out == (
        "relay check: OK (3 rules, 3 sends, 3 sinks, 4 sample events, 7 of 7 tests passed)\n"
    )


def test_check_fails_on_a_failing_test(tested: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """A failing golden test fails relay check (exit 1) with the case's report."""
    tested.edit_rules(
        'to: "{{ primary_email(data) }}"', 'to: "{{ data.email_addresses[0].email_address }}"'
    )
    assert run(tested, "check", "--samples", str(tested.samples)) == 1
    err = capsys.readouterr().err
    assert "FAIL  the welcome email goes to the primary address" in err
    assert '        rendered: "ada.old@example.org"\n' in err
    assert err.endswith(
        "relay check: 1 error(s) (3 rules, 3 sends, 3 sinks, 4 sample events, "
        "6 of 7 tests passed)\n"
    )
