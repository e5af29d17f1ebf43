"""Process settings from the environment (paths, database, address) — not the routing rules."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Settings:
    rules_path: Path = Path("rules.yaml")
    templates_dir: Path = Path("templates")
    samples_dir: Path = Path("samples")
    database_url: str = "sqlite:///relay.db"
    host: str = "127.0.0.1"
    port: int = 8000
    dry_run: bool = False
    worker: bool = True
    ingest: bool = True
    log_format: str = "auto"  # auto | json | text
    shutdown_grace_s: float = 10.0  # on SIGTERM, how long attempts in flight may finish
    db_upgrade: bool = False  # upgrade an older database schema at start

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        base = cls()
        return replace(
            base,
            rules_path=Path(env.get("RELAY_RULES", str(base.rules_path))),
            templates_dir=Path(env.get("RELAY_TEMPLATES", str(base.templates_dir))),
            samples_dir=Path(env.get("RELAY_SAMPLES", str(base.samples_dir))),
            database_url=env.get("RELAY_DATABASE_URL", base.database_url),
            host=env.get("RELAY_HOST", base.host),
            port=int(env.get("RELAY_PORT", str(base.port))),
            dry_run=env.get("RELAY_DRY_RUN", "") in ("1", "true", "yes"),
            db_upgrade=env.get("RELAY_DB_UPGRADE", "") in ("1", "true", "yes"),
            log_format=env.get("RELAY_LOG_FORMAT", base.log_format),
            shutdown_grace_s=float(env.get("RELAY_SHUTDOWN_GRACE_S", str(base.shutdown_grace_s))),
        )

    def with_(self, **changes: Any) -> Settings:
        """A copy with the given fields replaced; None values are ignored (unset CLI flags)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
