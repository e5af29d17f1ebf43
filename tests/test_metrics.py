"""What /metrics holds besides relay's own counters: the process, Python, and relay's build."""

from __future__ import annotations

import platform
from importlib.metadata import version

from prometheus_client.parser import text_string_to_metric_families

from relay.metrics import Metrics


def samples() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    text = Metrics().render().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_process_and_platform_collectors_are_registered() -> None:
    """The standard process_* series (CPU, memory, file descriptors, start time) and
    python_info, as every Python exporter has them, on relay's own registry."""
    found = samples()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_start_time_seconds"):  # fmt: skip
        assert name in found, name
    [(labels, value)] = found["python_info"].items()
    assert dict(labels)["version"] == platform.python_version()
    assert value == 1


def test_build_info_names_the_running_relay() -> None:
    """relay_build_info{version, python} is 1: which relay (and Python) a scrape came from."""
    [(labels, value)] = samples()["relay_build_info"].items()
    assert dict(labels) == {"version": version("relay"), "python": platform.python_version()}
    assert value == 1
