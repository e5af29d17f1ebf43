"""``relay preview EVENT``: what an event would send, rule by rule, rendered (sends nothing).

``--explain`` also says why the other rules did not match; ``--json`` gives the same for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from relay.cli._shared import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_config_args,
    add_json_arg,
    load,
    settings_for,
)
from relay.config.samples import parse_event, preview


def register(name: str, parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument(
        "event", type=Path, help="an event JSON file (e.g. samples/user.created.json)"
    )
    parser.add_argument("--rule", help="only this rule")
    parser.add_argument(
        "--explain", action="store_true", help="also say why other rules did not match"
    )
    add_json_arg(parser)
    parser.set_defaults(handler=run)


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
    results = preview(config, event, args.rule)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "rule": r.rule,
                        "matched": r.matched,
                        "reason": r.reason,
                        "sends": [
                            {
                                "sink": s.sink,
                                "type": s.sink_type,
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
    print(f"event {event.get('type')} ({args.event})")
    matched = [r for r in results if r.matched]
    for result in matched:
        for send in result.sends:
            print(f"\n=== rule {result.rule} -> sink {send.sink} ({send.sink_type})")
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
