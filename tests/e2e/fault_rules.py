"""What the fault-injection tests share: rules.yaml pieces (an HTTP sink with fast retries and
no circuit breaker, a rule for it), a project with its own rules, a minimal event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.harness import (
    E2EProject,
    make_project,
    with_env,
    write_rules,
)
from tests.e2e.upstream import FakeUpstream

FAST_RETRY = "{first_backoff_s: 0.2, max_backoff_s: 0.5}"
NO_BREAKER = "{failure_threshold: 1000}"  # isolate the fault under test from the breaker


def new_project(tmp_path: Path, upstream: FakeUpstream, rules: str, **env: str) -> E2EProject:
    project = with_env(make_project(tmp_path / "project", upstream), **env)
    write_rules(project, rules)
    return project


def event(type_: str, n: int = 0) -> dict[str, Any]:
    return {"type": type_, "object": "event", "data": {"id": f"obj_{n:04d}"}}


def http_sink(name: str, url: str, extra: str = "") -> str:
    return (
        f"  {name}:\n    type: http\n    url: {url}\n    retry: {FAST_RETRY}\n"
        f"    circuit: {NO_BREAKER}\n{extra}"
    )


def rule_for(sink: str, events: str | None = None, template: str | None = None) -> str:
    text = f"  - name: to-{sink}\n    events: {events or 'fault.' + sink}\n    send:\n"
    text += f"      - sink: {sink}\n"
    if template:
        text += f'        template: {template}\n        to: "{{{{ primary_email(data) }}}}"\n'
    return text
