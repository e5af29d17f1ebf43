"""Process settings from the environment (paths, database, address) — not the routing rules."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from relay.errors import SettingsError

LOG_LEVELS = ("debug", "info", "warning", "error")
# How long a request's body may take to arrive once its headers have: a sender that stalls
# mid-body gets a 408 and the connection is closed, instead of it holding the connection open
# (Svix sends the whole body at once, and gives up on a request itself after 15 s).
BODY_TIMEOUT_S = 15.0
# What one process holds for the requests it serves (relay.server.connections,
# relay.ingest.budget): open connections (unset: MAX_CONNECTIONS or fewer, as the open-file
# limit allows), request bodies in memory, and how long a connection may sit without a request.
MAX_CONNECTIONS = 1000
MAX_BUFFERED_BYTES = 32 * 1024 * 1024
IDLE_TIMEOUT_S = 5.0


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
    log_level: str = "info"  # debug | info | warning | error
    # On SIGTERM, how long requests and attempts in flight may finish. Docker kills a container
    # 10 s after SIGTERM (stop_grace_period): 8 s leaves the rest of the shutdown (closing the
    # sinks and the store) time to end before that.
    shutdown_grace_s: float = 8.0
    db_upgrade: bool = False  # upgrade an older database schema at start
    lease_margin_s: float = 60.0  # a claim lasts the sink's timeout_s plus this
    body_timeout_s: float = BODY_TIMEOUT_S  # a request's body must arrive within this (else 408)
    ops_host: str = "127.0.0.1"  # /healthz, /readyz and /metrics on their own address, when
    ops_port: int | None = None  # ops_port is set (then the public port has only the webhooks)
    max_connections: int | None = None  # open connections at most (then 503 + Retry-After)
    max_buffered_bytes: int = MAX_BUFFERED_BYTES  # request bodies held in memory at most
    idle_timeout_s: float = IDLE_TIMEOUT_S  # a connection without a request in progress closes

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``RELAY_*`` variables; a malformed value is a SettingsError naming it."""
        env = os.environ if env is None else env
        base = cls()
        log_format = env.get("RELAY_LOG_FORMAT", base.log_format)
        if log_format not in ("auto", "json", "text"):
            raise SettingsError(f"RELAY_LOG_FORMAT must be auto, json or text, not {log_format!r}")
        log_level = env.get("RELAY_LOG_LEVEL", base.log_level).strip().lower()
        if log_level not in LOG_LEVELS:
            raise SettingsError(
                "RELAY_LOG_LEVEL must be debug, info, warning or error, "
                f"not {env['RELAY_LOG_LEVEL']!r}"
            )
        return replace(
            base,
            rules_path=Path(env.get("RELAY_RULES", str(base.rules_path))),
            templates_dir=Path(env.get("RELAY_TEMPLATES", str(base.templates_dir))),
            samples_dir=Path(env.get("RELAY_SAMPLES", str(base.samples_dir))),
            database_url=env.get("RELAY_DATABASE_URL", base.database_url),
            host=env.get("RELAY_HOST", base.host),
            port=int(_number(env, "RELAY_PORT", base.port, 0, 65535, whole=True)),
            dry_run=_flag(env, "RELAY_DRY_RUN"),
            db_upgrade=_flag(env, "RELAY_DB_UPGRADE"),
            lease_margin_s=_number(env, "RELAY_LEASE_MARGIN_S", base.lease_margin_s, 1, 86400),
            body_timeout_s=_number(env, "RELAY_BODY_TIMEOUT_S", base.body_timeout_s, 1, 3600),
            ops_host=env.get("RELAY_OPS_HOST", base.ops_host),
            ops_port=_port(env, "RELAY_OPS_PORT"),
            max_connections=_whole(env, "RELAY_MAX_CONNECTIONS", 16, 100_000),
            max_buffered_bytes=_whole(env, "RELAY_MAX_BUFFERED_BYTES", 2**20, 2**40)
            or base.max_buffered_bytes,
            idle_timeout_s=_number(env, "RELAY_IDLE_TIMEOUT_S", base.idle_timeout_s, 0.1, 3600),
            log_format=log_format,
            log_level=log_level,
            shutdown_grace_s=_number(env, "RELAY_SHUTDOWN_GRACE_S", base.shutdown_grace_s, 0, 3600),
        )

    def with_(self, **changes: Any) -> Settings:
        """A copy with the given fields replaced; None values are ignored (unset CLI flags)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_WHOLE = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")  # no nan, inf or _


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """A boolean variable: 1/true/yes/on or 0/false/no/off (any case); anything else is a
    SettingsError, never a silent "off" (``RELAY_DRY_RUN=ture`` must not send for real)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise SettingsError(f"{name} must be true or false (or 1/0, yes/no, on/off), not {raw!r}")


def _port(env: Mapping[str, str], name: str) -> int | None:
    """An optional port: unset or empty is None."""
    return _whole(env, name, 1, 65535)


def _whole(env: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    """An optional whole number: unset or empty is None."""
    if not env.get(name, "").strip():
        return None
    return int(_number(env, name, 0, low, high, whole=True))


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    low: float,
    high: float,
    *,
    whole: bool = False,
) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if not (_WHOLE if whole else _DECIMAL).fullmatch(raw.strip()):
        kind = "a whole number" if whole else "a number"
        raise SettingsError(f"{name} must be {kind}, not {raw!r}")
    value = int(raw) if whole else float(raw)
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, not {raw!r}")
    return value
