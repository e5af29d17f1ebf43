"""Plugins from entry points: good ones load, broken ones are reported, never a crash."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from relay import plugins
from relay.sinks.base import SinkType


def fake_entry_points(group: str) -> list[EntryPoint]:
    return [
        EntryPoint(name="http", value="relay.sinks.http:SINK", group=group),
        EntryPoint(name="missing", value="relay_no_such_module:SINK", group=group),
        EntryPoint(name="wrong", value="relay.sinks.base:SinkSettings", group=group),
    ]


def test_good_plugins_load_and_broken_ones_are_described(monkeypatch: pytest.MonkeyPatch) -> None:
    """An importable SinkType loads; an import failure or a wrong object is reported by name."""
    monkeypatch.setattr(plugins, "entry_points", fake_entry_points)
    broken: dict[str, str] = {}
    found = plugins.load_plugins("relay.sinks", SinkType, broken)
    assert list(found) == ["http"]
    assert broken == {
        "missing": "ModuleNotFoundError: No module named 'relay_no_such_module'",
        "wrong": "relay.sinks.base:SinkSettings is not a relay SinkType",
    }
