"""CPU and memory from Linux's /proc: per process, per group of processes, the whole machine.

CPU figures are fractions of one core over an interval (``start()`` .. ``stop()``). ``Meters``
bundles what the ingest and delivery benches read over their timed phase: the processes under
test, the helpers (this process, a fake sink), PostgreSQL working for them, and the machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and friends from /proc/PID/status, in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Vm") and value.strip().endswith("kB"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class CpuMeter:
    """CPU use of a process over an interval, as a fraction of one core."""

    pid: int
    _cpu0: float = 0.0
    _t0: float = 0.0

    def start(self) -> None:
        self._cpu0, self._t0 = cpu_seconds(self.pid), time.perf_counter()

    def stop(self) -> float:
        wall = time.perf_counter() - self._t0
        return (cpu_seconds(self.pid) - self._cpu0) / wall if wall > 0 else 0.0


class GroupCpuMeter:
    """CPU use of a set of processes over an interval, as a fraction of one core: ``pids()`` is
    asked at the start and at the end; a process that appeared in between counts from 0, one
    that exited counts up to the last time it was seen (at the start: nothing)."""

    def __init__(self, pids: Callable[[], set[int]]) -> None:
        self._pids = pids
        self._cpu0: dict[int, float] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._cpu0 = {pid: cpu for pid in self._pids() if (cpu := _cpu_or_none(pid)) is not None}
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        wall = time.perf_counter() - self._t0
        used = 0.0
        for pid in self._pids() | set(self._cpu0):
            cpu = _cpu_or_none(pid)
            if cpu is not None:
                used += cpu - self._cpu0.get(pid, 0.0)
        return used / wall if wall > 0 else 0.0


def _cpu_or_none(pid: int) -> float | None:
    try:
        return cpu_seconds(pid)
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class MachineMeter:
    """How busy all the CPUs were over an interval (every process), in cores; and, apart, the
    hypervisor's steal: time this VM's CPUs were ready to run but the host ran something else.
    Steal slows every process here without showing as any process's CPU, so a run with much of
    it is not comparable with one without."""

    _busy0: int = 0
    _steal0: int = 0
    steal: float = 0.0

    def start(self) -> None:
        self._busy0, self._steal0 = self._read()
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Busy cores over the interval, steal excepted (``steal`` holds that, in cores)."""
        wall = time.perf_counter() - self._t0
        busy, steal = self._read()
        if wall <= 0:
            return 0.0
        self.steal = (steal - self._steal0) / CLK_TCK / wall
        return (busy - self._busy0) / CLK_TCK / wall

    @staticmethod
    def _read() -> tuple[int, int]:
        """(busy but not stolen, stolen) jiffies of all CPUs so far, from /proc/stat."""
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        steal = values[7] if len(values) > 7 else 0
        return sum(values) - values[3] - values[4] - steal, steal  # idle and iowait are idle


@dataclass
class Meters:
    """CPU use over a timed phase, as fractions of one core: the server processes (each
    replica or worker), the helpers (this process; for delivery also the fake sink),
    PostgreSQL's processes working for them (if any), and the whole machine (every process on
    every CPU)."""

    server_pids: list[int]
    helper_pids: list[int]
    pg_pids: Callable[[], set[int]] | None = None  # PostgreSQL processes serving the servers
    seconds: float = 0.0
    server_cpus: list[float] = field(default_factory=list)
    helper_cpu: float = 0.0
    pg_cpu: float = 0.0
    machine: float = 0.0
    steal: float = 0.0  # the hypervisor's, in cores: see MachineMeter

    def __post_init__(self) -> None:
        self._servers = [CpuMeter(pid) for pid in self.server_pids]
        self._helpers = [CpuMeter(pid) for pid in self.helper_pids]
        self._pg = GroupCpuMeter(self.pg_pids) if self.pg_pids else None
        self._machine = MachineMeter()

    @property
    def server_cpu(self) -> float:
        return sum(self.server_cpus)

    @property
    def other_cpu(self) -> float:
        """Busy time of the whole machine (in cores) not explained by the processes measured:
        other processes."""
        return max(0.0, self.machine - self.server_cpu - self.pg_cpu - self.helper_cpu)

    def start(self) -> None:
        if self._pg:
            self._pg.start()
        for meter in (*self._servers, *self._helpers):
            meter.start()
        self._machine.start()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.machine = self._machine.stop()
        self.steal = self._machine.steal
        self.server_cpus = [m.stop() for m in self._servers]
        self.helper_cpu = sum(m.stop() for m in self._helpers)
        self.pg_cpu = self._pg.stop() if self._pg else 0.0
