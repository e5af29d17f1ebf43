"""The browser tests' fixtures: a real `relay studio` process on a copy of the shipped project,
and headless Chromium (Debian's package) driven by Playwright.

Without Chromium or Playwright the browser tests skip, saying what is missing, except under
CI=true, where that is a failure (``.ci/run`` installs both).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_ENV, Project
from tests.e2e.harness import free_port

CHROMIUM = os.environ.get("RELAY_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, one per test module."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        except Error as exc:
            _unavailable(f"Chromium at {CHROMIUM} did not start: {exc}")
        yield launched
        launched.close()


@dataclass
class Studio:
    url: str
    project: Project
    proc: subprocess.Popen[bytes]


@pytest.fixture
def studio(project: Project, tmp_path: Path) -> Iterator[Studio]:
    """`relay studio` on a copy of the shipped project, ready."""
    port = free_port()
    log = (tmp_path / "studio.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "studio", "--port", str(port), "--rules",
         str(project.rules), "--templates", str(project.templates), "--samples",
         str(project.samples)],
        env={**os.environ, **TEST_ENV}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/fingerprint", timeout=1):  # noqa: S310 (local)
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError((tmp_path / "studio.log").read_text()) from None
            time.sleep(0.05)
    try:
        yield Studio(url, project, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(5000)
    yield opened
    context.close()
