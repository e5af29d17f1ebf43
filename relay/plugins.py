"""Loading plugins (sink and source types) from an entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TypeVar

T = TypeVar("T")


def load_plugins(group: str, kind: type[T], broken: dict[str, str] | None = None) -> dict[str, T]:
    """Every object of type ``kind`` registered in the entry-point ``group``, by name.

    A plugin that fails to import, or is not a ``kind``, is left out; why is put in ``broken``
    (if given) so that a config that uses it can say so instead of crashing.
    """
    found: dict[str, T] = {}
    for ep in entry_points(group=group):
        try:
            plugin = ep.load()
        except Exception as exc:
            if broken is not None:
                broken[ep.name] = f"{type(exc).__name__}: {exc}"
            continue
        if not isinstance(plugin, kind):
            if broken is not None:
                broken[ep.name] = f"{ep.value} is not a relay {kind.__name__}"
            continue
        found[ep.name] = plugin
    return found
