"""py-spy on a server during a timed phase, and a per-thread summary of what it sampled."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import ClassVar

from _procs import LOAD_CPU, VENV_BIN, taskset


class Profiler:
    """py-spy (if installed) sampling a pid, pinned to the load CPU, raw (collapsed) output."""

    MODES: ClassVar[dict[str, list[str]]] = {"wall": ["--idle"], "cpu": [], "gil": ["--gil"]}

    def __init__(self, out_dir: Path, name: str, pid: int, mode: str = "wall") -> None:
        self.out = out_dir / f"{name}.{mode}.collapsed.txt"
        self.pid = pid
        self.mode = mode
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
        if not Path(exe).exists():
            print("  (py-spy not found: `.venv/bin/pip install py-spy`; not profiling)")
            return
        argv = [*taskset(LOAD_CPU), exe, "record", "--pid", str(self.pid), "--format", "raw"]
        argv += ["--rate", "250", "--threads", "--nonblocking", *self.MODES[self.mode]]
        argv += ["-o", str(self.out)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.out.exists():
            print(f"  profile ({self.mode}): {self.out}")
            print(summarise_profile(self.out))


def summarise_profile(path: Path, top: int = 12) -> str:
    """Per thread: its share of the samples, then its functions with the most self samples
    (the line a thread was on) and the relay/ functions with the most inclusive samples."""
    threads: Counter[str] = Counter()
    self_time: dict[str, Counter[str]] = {}
    inclusive: dict[str, Counter[str]] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        total += count
        threads[thread] += count
        if frames:
            self_time.setdefault(thread, Counter())[frames[-1]] += count
        for frame in set(frames):
            if "relay/" in frame:
                inclusive.setdefault(thread, Counter())[frame] += count
    if not total:
        return "  (empty profile)"
    lines = []
    for thread, n in threads.most_common(4):
        lines.append(f"  {thread}: {100 * n / total:.1f}% of samples")
        lines.append("    self (share of this thread):")
        for frame, k in self_time.get(thread, Counter()).most_common(top):
            lines.append(f"      {100 * k / n:5.1f}%  {frame}")
        lines.append("    relay/ inclusive:")
        for frame, k in inclusive.get(thread, Counter()).most_common(top // 2):
            lines.append(f"      {100 * k / n:5.1f}%  {frame}")
    return "\n".join(lines)
