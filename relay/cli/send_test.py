"""``relay send-test``: sign a sample event with a source's secret and post it to a running relay,
as Clerk (Svix) or a Standard Webhooks sender would."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

import httpx

from relay.cli._shared import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_config_args,
    load,
    settings_for,
)
from relay.config.samples import load_samples, parse_event
from relay.secret import Secret
from relay.sources.signing import prefixed, sign

DEFAULT_SOURCE = "clerk"
HEADER_PREFIXES = {"svix": "svix", "standard-webhooks": "webhook"}  # source type → header prefix


def register(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("event", help="an event type (e.g. user.created) or an event JSON file")
    parser.add_argument(
        "--url", help="where to post (default: the source's path on http://$RELAY_HOST:$RELAY_PORT)"
    )
    parser.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help="the source whose secret signs it (default: clerk)",
    )
    add_config_args(parser, samples=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    config = load(settings, "check", sys.stderr, warnings=False)
    if config is None:
        return EXIT_FAILED
    source = config.sources.get(args.source)
    if source is None:
        known = ", ".join(sorted(config.sources))
        print(f"relay send-test: no source '{args.source}' (sources: {known})", file=sys.stderr)
        return EXIT_USAGE
    prefix = HEADER_PREFIXES.get(source.type.name)
    if prefix is None:
        print(
            f"relay send-test: source '{source.name}' is a {source.type.name} source; send-test "
            "supports svix and standard-webhooks sources",
            file=sys.stderr,
        )
        return EXIT_USAGE
    secret = getattr(source.settings, "secret", None)
    if not source.complete or not isinstance(secret, Secret):
        print(
            f"relay send-test: source '{source.name}' has no signing secret (set the variable "
            f"its secret names in {settings.rules_path})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    path = Path(args.event)
    if path.suffix == ".json" or path.exists():
        try:
            body = path.read_bytes()
        except OSError as exc:
            print(f"relay send-test: cannot read {path}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        _, problem = parse_event(body.decode("utf-8", "replace"), str(path))
        if problem:
            print(problem, file=sys.stderr)
            return EXIT_USAGE
    else:
        samples, _ = load_samples(settings.samples_dir)
        found = [s for s in samples if s.event.get("type") == args.event]
        if not found:
            print(
                f"relay send-test: no sample event of type {args.event} in "
                f"{settings.samples_dir}/ (pass a JSON file instead)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        body = json.dumps(found[0].event).encode()
    url = args.url or f"http://{settings.host}:{settings.port}{source.path}"
    msg_id = f"msg_{secrets.token_hex(12)}"
    timestamp = int(time.time())
    headers = {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(timestamp),
        f"{prefix}-signature": sign(prefixed(secret), msg_id, timestamp, body),
        "content-type": "application/json",
    }
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=15)
    except httpx.HTTPError as exc:
        print(
            f"relay send-test: cannot reach {url}: {exc} (is `relay serve` running?)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"POST {url} {prefix}-id={msg_id}")
    print(f"{response.status_code} {response.text}")
    return EXIT_OK if response.is_success else EXIT_FAILED
