"""The ``relay`` command: a thin shell over the functions ``serve`` uses."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from relay.config import Config, Mode, load_config
from relay.errors import ConfigError, Diagnostic, SettingsError
from relay.samples import load_samples, parse_event, preview, render_all
from relay.settings import Settings

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rules", type=Path, help="rules file (default: $RELAY_RULES or rules.yaml)"
    )
    parser.add_argument(
        "--templates", type=Path, help="templates folder (default: $RELAY_TEMPLATES or templates)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="A verified, durable relay for Clerk (Svix) webhooks."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check", help="validate rules.yaml and render every template against the sample events"
    )
    _add_config_args(check)
    check.add_argument("--samples", type=Path, help="sample events folder (default: samples)")

    prev = sub.add_parser("preview", help="show what an event would send (sends nothing)")
    _add_config_args(prev)
    prev.add_argument(
        "event", type=Path, help="an event JSON file (e.g. samples/user.created.json)"
    )
    prev.add_argument("--rule", help="only this rule")
    prev.add_argument(
        "--explain", action="store_true", help="also say why other rules did not match"
    )
    prev.add_argument("--json", action="store_true", help="machine-readable output")

    from relay import commands  # the server-side commands live apart: they import more

    commands.register(sub)
    return parser


def settings_for(args: argparse.Namespace) -> Settings:
    return Settings.from_env().with_(
        rules_path=getattr(args, "rules", None),
        templates_dir=getattr(args, "templates", None),
        samples_dir=getattr(args, "samples", None),
    )


def load(settings: Settings, mode: Mode, out: TextIO, *, warnings: bool = True) -> Config | None:
    """Load the config, printing located errors (and warnings); None when it is invalid."""
    try:
        config = load_config(settings.rules_path, settings.templates_dir, mode=mode)
    except ConfigError as exc:
        shown = [d for d in exc.diagnostics if warnings or d.severity == "error"]
        _print_diagnostics(shown, out)
        return None
    if warnings:
        _print_diagnostics(list(config.warnings), out)
    return config


def _print_diagnostics(diagnostics: Sequence[Diagnostic], out: TextIO) -> None:
    for diagnostic in diagnostics:
        print(diagnostic, file=out)


def cmd_check(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    config = load(settings, "check", sys.stderr)
    if config is None:
        print("relay check: invalid configuration", file=sys.stderr)
        return EXIT_INVALID
    samples, problems = load_samples(settings.samples_dir)
    found = problems + render_all(config, samples, str(settings.samples_dir))
    _print_diagnostics(found, sys.stderr)
    errors = [d for d in found if d.severity == "error"]
    sends = sum(len(r.sends) for r in config.rules)
    summary = (
        f"{len(config.rules)} rules, {sends} sends, {len(config.sinks)} sinks, "
        f"{len(samples)} sample events"
    )
    if errors:
        print(f"relay check: {len(errors)} error(s) ({summary})", file=sys.stderr)
        return EXIT_INVALID
    print(f"relay check: OK ({summary})")
    return EXIT_OK


def cmd_preview(args: argparse.Namespace) -> int:
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
        return EXIT_INVALID
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
    return EXIT_INVALID if failed else EXIT_OK


COMMANDS = {"check": cmd_check, "preview": cmd_preview}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS.get(args.command) or args.handler
    try:
        return int(handler(args))
    except SettingsError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
