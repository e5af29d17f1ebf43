"""``relay test``: run the golden tests of the rules (``rules.test.yaml`` beside ``rules.yaml``).

Each case names an event and what must happen to it: which rules match, which sinks get a
message, what the messages say, or that nothing is sent. The output reads like a test runner's:
each case PASS or FAIL with a readable difference; the exit code is 1 when any case fails or the
test file is malformed (its problems located, as for ``rules.yaml``). Nothing is sent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relay.cli._shared import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_config_args,
    load,
    print_diagnostics,
    settings_for,
)
from relay.config.goldens import report, run_file, tests_path


def register(name: str, parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument(
        "file",
        metavar="FILE",
        type=Path,
        nargs="?",
        help="the test file (default: beside the rules file, e.g. rules.test.yaml)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    path = args.file or tests_path(settings.rules_path)
    if not path.is_file():
        print(f"relay test: no test file at {path} (docs/testing.md says what goes in it)",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    config = load(settings, "check", sys.stderr, warnings=False)  # tests need no secrets
    if config is None:
        print("relay test: invalid configuration", file=sys.stderr)
        return EXIT_FAILED
    results, problems = run_file(config, path)
    if problems:
        print_diagnostics(problems, sys.stderr)
        print(f"relay test: {path} is malformed ({len(problems)} problem(s))", file=sys.stderr)
        return EXIT_FAILED
    print(path)
    for line in report(results):
        print(line)
    failed = sum(not r.passed for r in results)
    print(f"\n{len(results) - failed} passed, {failed} failed")
    return EXIT_FAILED if failed else EXIT_OK
