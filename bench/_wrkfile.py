"""wrk fed from a file of requests, closed-loop or paced to a fixed rate, logging its sends.

``_wrk.write_script`` puts every request in the Lua script as a string literal; for tens of
thousands of 2 kB webhooks that script takes long to write and to load. Here the requests go to
a file of their own, NUL-separated (a raw HTTP/1.1 request holds no NUL), which the script reads
once at start. Two more things the service bench needs:

- **pacing** (``rate``): wrk is closed-loop (each connection sends as soon as its answer came);
  with a rate, the script's ``delay()`` hook hands out send times ``1/rate`` apart on one
  schedule shared by the thread's connections, so the offered rate is ``rate`` while enough
  connections are free (a schedule more than a second behind restarts from now). Send times
  come from ``clock_gettime`` through LuaJIT's FFI, which wrk's LuaJIT has.
- **a send log** (``log``): each request's label and the wall-clock time (CLOCK_REALTIME, as
  Python's ``time.time()``) wrk was about to write it, one ``label time`` line each: when each
  webhook left the sender.

Run it with ``_wrk.run`` or ``_wrk.start`` and read the report with ``_wrk.parse`` (its
``wrapped`` counts the times the requests were started over).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import _wrk

_SCRIPT = (
    """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_s(clock)
  ffi.C.clock_gettime(clock, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local requests, labels = {}, {}
local data = io.open("%(requests)s", "rb"):read("*a")
local pos = 1
while pos <= #data do
  local stop = string.find(data, "\\0", pos, true) or (#data + 1)
  requests[#requests + 1] = string.sub(data, pos, stop - 1)
  pos = stop + 1
end
for line in io.lines("%(labels)s") do labels[#labels + 1] = line end

local i = 0
wrapped = 0
local log = nil
if "%(log)s" ~= "" then
  log = io.open("%(log)s", "w")
  log:setvbuf("line")
end
request = function()
  i = i + 1
  if i > #requests then i = 1; wrapped = wrapped + 1 end
  if log then log:write(labels[i], " ", string.format("%%.6f", now_s(0)), "\\n") end
  return requests[i]
end

local rate = %(rate)s
if rate > 0 then
  local interval = 1.0 / rate
  local next_at = nil
  delay = function()
    local now = now_s(1)
    if next_at == nil or next_at < now - 1.0 then next_at = now end
    local wait = next_at - now
    next_at = next_at + interval
    if wait < 0 then wait = 0 end
    return math.floor(wait * 1000 + 0.5)
  end
end
"""
    + _wrk.DONE_LUA
)


def write_script(
    path: Path,
    requests: Sequence[bytes],
    labels: Sequence[str],
    *,
    rate: float = 0.0,
    log: Path | None = None,
) -> Path:
    """A wrk script at ``path`` sending ``requests`` in turn (their file beside it), paced to
    ``rate`` per second if given, logging ``labels[i]`` and the send time of each to ``log``."""
    if len(labels) != len(requests) or any(b"\0" in r for r in requests):
        raise ValueError("one label per request, and no NUL in a request")
    data = path.with_suffix(".requests")
    data.write_bytes(b"\0".join(requests))
    names = path.with_suffix(".labels")
    names.write_text("".join(f"{label}\n" for label in labels))
    values = {"requests": data, "labels": names, "log": log or "", "rate": float(rate)}
    path.write_text(_SCRIPT % values)
    return path


def read_log(log: Path) -> dict[str, float]:
    """A send log as ``{label: send time}`` (the last send of a label, if it was sent again)."""
    sent = {}
    for line in log.read_text().splitlines():
        label, _, at = line.partition(" ")
        if at:
            sent[label] = float(at)
    return sent
