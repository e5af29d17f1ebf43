"""Config fuzzing: arbitrary mutations of the shipped rules.yaml never crash `relay check`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.cli import main
from tests.conftest import ROOT, TEST_ENV

SHIPPED = (ROOT / "rules.yaml").read_text()
LINES = SHIPPED.splitlines(keepends=True)
LOCATED = re.compile(r"^\S.*:\d+:\d+: ")
SUMMARY = re.compile(r"^relay check: ")

TOKENS = [
    ":",
    "- ",
    "  ",
    "\t",
    "{",
    "}",
    "[",
    "]",
    "'",
    '"',
    "&a",
    "*a",
    "!!python/object:os.system",
    "${",
    "${X",
    "${NOPE}",
    "}}",
    "{{",
    "{%",
    "on",
    "yes",
    "null",
    "~",
    "0x1F",
    "1e9",
    "-1",
    "<<: *a",
    "\x00",
    "é",
    "\n",
    "#",
    "|",
    ">",
    "? ",
    "%YAML 1.1\n---\n",
    "sink",
    "type",
    "events",
    "send",
    "template",
    "when",
    "rules",
    "sinks",
    "sources",
]


@st.composite
def mutated_rules(draw: st.DrawFn) -> str:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "duplicate", "insert", "replace", "indent", "swap"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "insert":
            line = lines[i]
            pos = draw(st.integers(0, len(line)))
            token = draw(st.sampled_from(TOKENS) | st.text(max_size=8))
            lines[i] = line[:pos] + token + line[pos:]
        elif op == "replace":
            key, _, _ = lines[i].partition(":")
            value = draw(st.sampled_from(TOKENS) | st.text(max_size=12))
            lines[i] = f"{key}: {value}\n"
        elif op == "indent":
            lines[i] = draw(st.sampled_from(["", " ", "    ", "\t"])) + lines[i].lstrip(" ")
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(ROOT / "templates", root / "templates")
    shutil.copytree(ROOT / "samples", root / "samples")
    return root


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=mutated_rules())
def test_check_never_crashes_on_mutated_rules(
    text: str, workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every mutation either passes check or prints only located errors and exits 1."""
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    rules = workdir / "rules.yaml"
    rules.write_text(text, encoding="utf-8", errors="surrogateescape")
    code = main(
        [
            "check",
            "--rules",
            str(rules),
            "--templates",
            str(workdir / "templates"),
            "--samples",
            str(workdir / "samples"),
        ]
    )
    out, err = capsys.readouterr()
    assert code in (0, 1)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line]
    for line in lines:
        assert LOCATED.match(line) or SUMMARY.match(line), line
    if code == 1:
        assert any(LOCATED.match(line) and "warning:" not in line for line in lines)
