"""``relay preview EVENT``: what an event would send, rule by rule, rendered (sends nothing).

Each send says when it would go out if the event were received now (``--at``: then): at once,
after its delay, at its send window's opening, or in a digest (rendered over the event and the
other sample events the rule matches); and what would cancel it or hold it back.
``--explain`` also says why the other rules did not match; ``--json`` gives the same for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from relay.cli._format import iso
from relay.cli._shared import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_config_args,
    add_json_arg,
    load,
    settings_for,
)
from relay.config.samples import load_samples, parse_event, preview


def register(name: str, parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, samples=True)
    parser.add_argument(
        "event", type=Path, help="an event JSON file (e.g. samples/user.created.json)"
    )
    parser.add_argument("--rule", help="only this rule")
    parser.add_argument(
        "--explain", action="store_true", help="also say why other rules did not match"
    )
    parser.add_argument(
        "--at",
        type=_moment,
        metavar="T",
        help="as if received at T, an ISO-8601 time (default: now; UTC unless it says)",
    )
    add_json_arg(parser)
    parser.set_defaults(handler=run)


def _moment(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not an ISO-8601 time (2024-05-01T12:00:00Z)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def run(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    try:
        text = args.event.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"relay preview: cannot read {args.event}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    event, problem = parse_event(text, str(args.event))
    if event is None:
        print(problem, file=sys.stderr)
        return EXIT_USAGE
    config = load(settings, "check", sys.stderr, warnings=False)  # preview needs no secrets
    if config is None:
        return EXIT_FAILED
    if args.rule and args.rule not in {r.name for r in config.rules}:
        print(f"relay preview: no rule named '{args.rule}'", file=sys.stderr)
        return EXIT_USAGE
    now = time.time() if args.at is None else args.at
    samples, _ = load_samples(settings.samples_dir)
    results = preview(config, event, args.rule, now=now, samples=samples)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "rule": r.rule,
                        "matched": r.matched,
                        "reason": r.reason,
                        "workflow": r.workflow,
                        "digest_of": r.digest_of or None,
                        "sends": [
                            {
                                "sink": s.sink,
                                "type": s.sink_type,
                                "due_at": iso(s.due_at, ms=True),
                                "timing": s.timing,
                                "payload": s.payload,
                                "error": s.error,
                            }
                            for s in r.sends
                        ],
                    }
                    for r in results
                ],
                indent=2,
                default=str,
            )
        )
        return EXIT_OK
    print(f"event {event.get('type')} ({args.event}), as if received at {iso(now)}")
    matched = [r for r in results if r.matched]
    for result in matched:
        for send in result.sends:
            print(f"\n=== rule {result.rule} -> sink {send.sink} ({send.sink_type})")
            when = send.timing if send.due_at is None else f"{iso(send.due_at)}: {send.timing}"
            print(f"  {'goes out:':<9} {when}")
            for note in result.workflow:
                print(f"  {'and:':<9} {note}")
            if result.digest_of:
                over = f"{result.digest_of} event(s): this one and the samples the rule matches"
                print(f"  {'digest:':<9} rendered over {over}")
            if send.error:
                print(f"  ERROR: {send.error}")
            for label, value in send.lines:
                if "\n" in value.rstrip("\n"):
                    print(f"  {label}:")
                    for line in value.rstrip("\n").splitlines():
                        print(f"    | {line}")
                else:
                    print(f"  {label + ':':<9} {value.rstrip()}")
    skipped = [r for r in results if not r.matched]
    if args.explain:
        for result in skipped:
            print(f"\n--- rule {result.rule}: not matched: {result.reason}")
    print(
        f"\n{len(matched)} rule(s) matched, {len(skipped)} did not"
        + ("" if args.explain or not skipped else " (--explain says why)")
    )
    failed = any(s.error for r in matched for s in r.sends)
    return EXIT_FAILED if failed else EXIT_OK
