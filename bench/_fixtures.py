"""What the benches feed relay: signed Clerk events, a bench rules.yaml and relay's environment.

Every event is Clerk's example ``user.created`` (``samples/user.created.json``, about 2.2 kB)
with its own ``data.id``, signed the Svix way with a fresh ``whsec_`` secret, as Clerk would.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

from _procs import REPO

from relay.secret import Secret
from relay.sources.signing import sign

SAMPLE_USER_CREATED = REPO / "samples" / "user.created.json"


def new_secret() -> str:
    """A fresh Clerk-like signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def svix_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers Svix sends with ``body``: content type, id, timestamp and signature (valid
    for 300 s after ``timestamp``)."""
    return {
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": sign(Secret(secret), msg_id, timestamp, body),
    }


def user_created_bodies(n: int, tag: str) -> list[bytes]:
    """``n`` distinct user.created events (Clerk's example, ~2.2 kB), compact JSON bytes."""
    sample = json.loads(SAMPLE_USER_CREATED.read_text())
    bodies = []
    for i in range(n):
        sample["data"]["id"] = f"user_{tag}{i:08d}"
        sample["timestamp"] = 1732700000000 + i
        bodies.append(json.dumps(sample, separators=(",", ":")).encode())
    return bodies


def write_rules(
    folder: Path,
    *,
    sink_url: str,
    concurrency: int = 32,
    timeout_s: float = 10.0,
) -> tuple[Path, Path]:
    """A bench rules.yaml (one clerk source, one http sink, one user.created rule) and an
    empty templates folder. The http send has no template, so the sink posts the envelope."""
    templates = folder / "templates"
    templates.mkdir(exist_ok=True)
    rules = folder / "rules.yaml"
    rules.write_text(
        f"""version: 1
sources:
  clerk:
    path: /webhooks/clerk
    verify: svix
    secret: ${{CLERK_WEBHOOK_SIGNING_SECRET}}
sinks:
  hook:
    type: http
    url: {sink_url}
    concurrency: {concurrency}
    timeout_s: {timeout_s}
rules:
  - name: bench
    events: user.created
    send:
      - sink: hook
"""
    )
    return rules, templates


def relay_env(db: Path | str, secret: str, rules: Path, templates: Path) -> dict[str, str]:
    """The environment of a bench relay; ``db`` is a SQLite file or a database URL."""
    return {
        "RELAY_DATABASE_URL": db if isinstance(db, str) else f"sqlite:///{db}",
        "RELAY_RULES": str(rules),
        "RELAY_TEMPLATES": str(templates),
        "RELAY_LOG_FORMAT": "json",
        "CLERK_WEBHOOK_SIGNING_SECRET": secret,
    }
