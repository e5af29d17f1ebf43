"""``relay check``: validate rules.yaml and render every template against the sample events, then
run the golden tests beside it (``rules.test.yaml``, as ``relay test``) when there are any.

It needs no secrets and no database: unset variables are warnings. The same functions validate a
reload in ``relay serve``, so a file that passes here is one the server accepts.
"""

from __future__ import annotations

import argparse
import sys

from relay.cli._shared import (
    EXIT_FAILED,
    EXIT_OK,
    add_config_args,
    load,
    print_diagnostics,
    settings_for,
)
from relay.config.goldens import report, run_file, tests_path
from relay.config.samples import load_samples, render_all


def register(name: str, parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, samples=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    config = load(settings, "check", sys.stderr)
    if config is None:
        print("relay check: invalid configuration", file=sys.stderr)
        return EXIT_FAILED
    samples, problems = load_samples(settings.samples_dir)
    found = problems + render_all(config, samples, str(settings.samples_dir))
    print_diagnostics(found, sys.stderr)
    errors = sum(d.severity == "error" for d in found)
    sends = sum(len(r.sends) for r in config.rules)
    summary = (
        f"{len(config.rules)} rules, {sends} sends, {len(config.sinks)} sinks, "
        f"{len(samples)} sample events"
    )
    tests = tests_path(settings.rules_path)
    if tests.is_file():
        results, problems = run_file(config, tests)
        print_diagnostics(problems, sys.stderr)
        for line in report(results, passed=False):
            print(line, file=sys.stderr)
        failed = sum(not r.passed for r in results)
        errors += len(problems) + failed
        summary += f", {len(results) - failed} of {len(results)} tests passed" if results else ""
    if errors:
        print(f"relay check: {errors} error(s) ({summary})", file=sys.stderr)
        return EXIT_FAILED
    print(f"relay check: OK ({summary})")
    return EXIT_OK
