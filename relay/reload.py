"""Hot reload of rules.yaml and templates: on file change (polled) and on SIGHUP.

A reload goes through the same checks as ``relay check`` — validation and rendering every send
against the sample events. A reload that fails is rejected and logged with its located errors,
and the previous config keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from relay.config import Config, Mode, load_config
from relay.config.samples import load_samples, render_all
from relay.errors import ConfigError, Diagnostic
from relay.settings import Settings

log = logging.getLogger("relay.reload")
Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(settings: Settings) -> Fingerprint:
    """Name, mtime and size of the rules file and every file under templates/."""
    paths = [settings.rules_path]
    if settings.templates_dir.is_dir():
        paths += sorted(p for p in settings.templates_dir.rglob("*") if p.is_file())
    return stats(paths)


def stats(paths: Iterable[Path]) -> Fingerprint:
    """Name, mtime and size of each of ``paths`` that exists."""
    out = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


def validate(settings: Settings, mode: Mode) -> tuple[Config | None, list[Diagnostic]]:
    """Load and render-check the config as ``relay check`` does; (config, problems)."""
    try:
        config = load_config(settings.rules_path, settings.templates_dir, mode=mode)
    except ConfigError as exc:
        return None, [d for d in exc.diagnostics if d.severity == "error"]
    samples, problems = load_samples(settings.samples_dir)
    found = problems + render_all(config, samples, str(settings.samples_dir))
    errors = [d for d in found if d.severity == "error"]
    return (None, errors) if errors else (config, list(config.warnings))


@dataclass
class Reloader:
    settings: Settings
    mode: Mode
    apply: Callable[[Config], None]
    on_result: Callable[[bool], None] = lambda ok: None
    interval_s: float = 1.0
    _seen: Fingerprint = field(default=())
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self._seen = fingerprint(self.settings)

    async def reload(self, reason: str) -> bool:
        """Validate and apply the files as they are now; False (old config kept) on error."""
        async with self._lock:
            self._seen = fingerprint(self.settings)
            config, problems = await asyncio.to_thread(validate, self.settings, self.mode)
            if config is None:
                log.error(
                    "config reload rejected; the previous config keeps serving",
                    extra={"fields": {"reason": reason, "errors": [str(d) for d in problems]}},
                )
                self.on_result(False)
                return False
            self.apply(config)
            log.info(
                "config reloaded",
                extra={
                    "fields": {
                        "reason": reason,
                        "rules": len(config.rules),
                        "sinks": sorted(config.sinks),
                        "warnings": [str(d) for d in problems],
                    }
                },
            )
            self.on_result(True)
            return True

    async def watch(self) -> None:
        """Poll the files; reload when anything changed."""
        while True:
            await asyncio.sleep(self.interval_s)
            if fingerprint(self.settings) != self._seen:
                await self.reload("file changed")
