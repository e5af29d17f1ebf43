"""wrk as a load generator: pre-built requests in a Lua script, wrk's ``--latency`` report parsed.

``write_script`` writes raw HTTP/1.1 requests (each a distinct, pre-signed webhook, say) into a
Lua script that hands them to wrk in turn, one per request; once all are used it starts over and
counts the wrap (a run should use fewer than it has, or its webhooks become duplicates). A script
with no requests of its own (``path_script``) sends one GET again and again. ``run`` runs wrk
(pinned to a CPU with taskset, like every load generator here) and ``parse`` reads its report:
requests, seconds, requests/s, the latency percentiles, socket errors and non-2xx answers.

    requests = [raw_request("POST", "/webhooks/clerk", headers, body) for ...]
    script = write_script(tmp / "ingest.lua", requests)
    result = run("http://127.0.0.1:8000", script, connections=32, seconds=10)
    print(result.rate, result.latency_ms[50])

``wrk`` is a system package (``apt-get install wrk``); benches need it, CI does not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _procs import LOAD_CPU, taskset

PERCENTILES = (50, 75, 90, 99)
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_COUNT = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6}


@dataclass
class WrkResult:
    """What one wrk run reports."""

    requests: int
    seconds: float
    rate: float  # requests/s, as wrk counts them
    latency_ms: dict[int, float]  # percentile -> ms
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect, read, write, timeout
    non_2xx: int = 0
    wrapped: int = 0  # times the script started its requests over
    output: str = ""

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx


def raw_request(method: str, path: str, headers: Mapping[str, str], body: bytes = b"") -> bytes:
    """One HTTP/1.1 request, whole: wrk sends what a script's ``request()`` returns as it is,
    so it carries its own Host and Content-Length."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_LUA_OTHER = re.compile(rb"[^\x20-\x7e]")


def _lua_string(data: bytes) -> str:
    """``data`` as a Lua string literal: printable ASCII kept, quote, backslash, CR and LF as
    their short escapes, any other byte ``\\ddd`` (byte by byte only where one is present:
    the common case is replaces, fast for a script of 100,000 requests)."""
    escaped = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    escaped = escaped.replace(b"\r", b"\\r").replace(b"\n", b"\\n")
    if _LUA_OTHER.search(escaped):
        escaped = _LUA_OTHER.sub(lambda m: b"\\%03d" % m.group()[0], escaped)
    return '"' + escaped.decode("ascii") + '"'


def write_script(path: Path, requests: Iterable[bytes]) -> Path:
    """A wrk Lua script sending ``requests`` in turn, one per wrk request (see the docstring)."""
    body = ",\n".join(_lua_string(request) for request in requests)
    path.write_text(
        "local requests = {\n" + body + "\n}\n"
        "local i = 0\n"
        "wrapped = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        "  if i > #requests then i = 1; wrapped = wrapped + 1 end\n"
        "  return requests[i]\n"
        "end\n" + DONE_LUA
    )
    return path


def path_script(path: Path, method: str, target: str) -> Path:
    """A wrk Lua script sending ``method target`` (no body) on every request."""
    path.write_text(
        f'wrapped = 0\nwrk.method = "{method}"\nwrk.path = "{target}"\n'
        "request = function() return wrk.format() end\n" + DONE_LUA
    )
    return path


# Thread states are separate Lua states: collect them in setup, read them in done.
DONE_LUA = """
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + (thread:get("wrapped") or 0) end
  io.write("wrapped: " .. total .. "\\n")
end
"""


def run(
    url: str,
    script: Path,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    cpu: int | None = LOAD_CPU,
    timeout_s: float = 10.0,
) -> WrkResult:
    """Run wrk against ``url`` with ``script`` and parse its report."""
    argv = _argv(url, script, connections, seconds, threads, cpu, timeout_s)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse(done.stdout)


def start(
    url: str,
    script: Path,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    cpu: int | None = LOAD_CPU,
) -> subprocess.Popen[str]:
    """wrk in the background (parse its stdout with ``parse`` once it exits)."""
    argv = _argv(url, script, connections, seconds, threads, cpu, 10.0)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _argv(
    url: str,
    script: Path,
    connections: int,
    seconds: float,
    threads: int,
    cpu: int | None,
    timeout_s: float,
) -> list[str]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    argv = [*taskset(cpu), "wrk", "--latency", f"-t{threads}", f"-c{connections}"]
    argv += [f"-d{max(1, round(seconds))}s", f"--timeout={max(1, round(timeout_s))}s"]
    return [*argv, "-s", str(script), url]


def parse(output: str) -> WrkResult:
    """wrk's ``--latency`` report as a WrkResult (ValueError if it is not one)."""
    summary = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if summary is None or rate is None:
        raise ValueError(f"not a wrk report:\n{output}")
    latency = {
        int(p): _ms(value, unit)
        for p, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    }
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = {}
    if errors is not None:
        names = ("connect", "read", "write", "timeout")
        socket_errors = dict(zip(names, map(int, errors.groups()), strict=True))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    wrapped = re.search(r"^wrapped: (\d+)", output, re.M)
    return WrkResult(
        requests=int(summary.group(1)),
        seconds=_ms(summary.group(2), summary.group(3)) / 1000,
        rate=float(rate.group(1)),
        latency_ms=latency,
        socket_errors=socket_errors,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        wrapped=int(wrapped.group(1)) if wrapped else 0,
        output=output,
    )


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def requests_needed(rate_guess: float, seconds: float, slack: float = 2.0) -> int:
    """How many distinct requests a run of ``seconds`` at about ``rate_guess``/s should have."""
    return int(rate_guess * seconds * slack) + 100


def median_spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of ``values``."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return median, ordered[0], ordered[-1]
