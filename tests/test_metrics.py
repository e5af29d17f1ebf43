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


def test_recipient_suppressions_and_unsubscribes_start_at_zero() -> None:
    """Every email send has its suppressed-recipient series by reason from the start, and the
    unsubscribe links their requests by method and outcome: dashboards see zeros, not gaps."""
    metrics = Metrics()
    metrics.prepare(["email", "slack"], [("tips", "email"), ("alert", "slack")], ["clerk"],
                    emails=[("tips", "email")])  # fmt: skip
    metrics.recipient_suppressed("email", "tips", "complained")
    metrics.unsubscribe_request("POST", "unsubscribed")
    registry = metrics.registry

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    suppressed = "relay_recipients_suppressed_total"
    reasons = ("bounced", "complained", "unsubscribed", "manual")
    counts = [value(suppressed, sink="email", rule="tips", reason=reason) for reason in reasons]
    assert counts == [0, 1, 0, 0]
    assert value(suppressed, sink="slack", rule="alert", reason="bounced") is None
    requests = "relay_unsubscribe_requests_total"
    assert value(requests, method="POST", outcome="unsubscribed") == 1
    assert value(requests, method="GET", outcome="shown") == 0
    assert value(requests, method="POST", outcome="refused") == 0
