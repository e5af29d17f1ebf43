"""``relay explain EVENT_ID``: why a stored event went where it went, and what would differ now.

For each rule of the current ``rules.yaml``: does the event match it, and if not, why (the
pattern or the condition, with its value) — ``preview``'s answer. For each delivery made when the
event arrived: its state, the message its last attempt rendered and sent (stored with the attempt:
``relay.delivery.snapshot``), and the difference from what the current rules would render now.
It reads the store and the files only: nothing is sent or changed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay.cli._format import BULK_LIMIT, dump, event_body, record_json, when
from relay.cli._shared import (
    EXIT_OK,
    add_config_args,
    add_database_arg,
    add_json_arg,
    fail,
    load,
    settings_for,
    with_store,
)
from relay.config import Config
from relay.config.checks import difference
from relay.config.samples import PreviewRule, preview
from relay.delivery.snapshot import snapshot
from relay.store.base import AttemptRecord, DeliveryLog, DeliveryRecord


def register(name: str, parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    add_database_arg(parser)
    parser.add_argument("id", metavar="EVENT_ID", help="relay event id (evt_...) or svix id")
    add_json_arg(parser)
    parser.set_defaults(handler=with_store(parser, explain))


@dataclass(frozen=True)
class Comparison:
    """One delivery: what its last attempt sent, and what the current rules render instead."""

    delivery: DeliveryRecord
    sent: Mapping[str, Any] | None  # None: no attempt has stored a render
    sent_by: AttemptRecord | None
    now: Mapping[str, Any] | None  # None: the current rules would not send it (``note``)
    note: str | None

    def diff(self) -> list[str]:
        """Field by field, sent against now; empty when they are the same."""
        if self.sent is None or self.now is None:
            return []
        lines: list[str] = []
        for key in sorted({*self.sent, *self.now}):
            old, new = self.sent.get(key, "(absent)"), self.now.get(key, "(absent)")
            if old != new:
                lines += [f"{key}:", *difference(old, new, ("sent", "now"))]
        return lines


def compare(
    config: Config,
    results: Sequence[PreviewRule],
    delivery: DeliveryRecord,
    attempts: Sequence[AttemptRecord],
) -> Comparison:
    """What ``delivery`` sent last against what ``config`` renders for the same send now."""
    sent_by = next((a for a in reversed(attempts) if a.rendered is not None), None)
    sent = json.loads(sent_by.rendered) if sent_by is not None and sent_by.rendered else None
    rule = next((r for r in results if r.rule == delivery.rule), None)
    send = (
        None
        if rule is None
        else next((s for s in rule.sends if s.index == delivery.send_index), None)
    )
    note = None
    if rule is None:
        note = f"rule '{delivery.rule}' is no longer in rules.yaml"
    elif not rule.matched:
        note = f"the rule no longer matches: {rule.reason}"
    elif send is None:
        note = f"the rule has no send {delivery.send_index} any more"
    elif send.error or send.payload is None:
        note = f"the template fails now: {send.error}"
    elif send.sink != delivery.sink:
        note = f"that send now goes to sink '{send.sink}'"
    now = None
    if send is not None and send.payload is not None and note is None:
        now = json.loads(snapshot(send.payload, config.secret_values))
    return Comparison(delivery, sent, sent_by, now, note)


async def explain(store: DeliveryLog, args: argparse.Namespace) -> int:
    record = await store.get_event(args.id)
    if record is None:
        return fail(f"no event {args.id}")
    event = event_body(record)
    if not isinstance(event, dict):
        return fail(f"event {record.id}: its stored body is not a JSON object")
    config = load(settings_for(args), "check", sys.stderr, warnings=False)
    if config is None:
        return fail("the rules above are invalid: explain compares with the current rules")
    results = preview(config, event)
    deliveries = await store.list_deliveries(event_id=record.id, limit=BULK_LIMIT)
    order = {r.rule: i for i, r in enumerate(results)}  # as rules.yaml lists them
    deliveries.sort(key=lambda d: (order.get(d.rule, len(order)), d.rule, d.send_index, d.sink))
    comparisons = [compare(config, results, d, await store.list_attempts(d.id)) for d in deliveries]
    made = {d.rule for d in deliveries}
    unsent = [r.rule for r in results if r.matched and r.rule not in made]
    if args.json:
        dump(
            {
                "event": record_json(record),
                "rules": [
                    {"rule": r.rule, "matched": r.matched, "reason": r.reason} for r in results
                ],
                "deliveries": [_comparison_json(c) for c in comparisons],
                "matched_now_without_delivery": unsent,
            }
        )
        return EXIT_OK
    now = time.time()
    print(f"event {record.id}: {record.type} from {record.source} (svix id {record.message_id}),"
          f" received {when(record.received_at, now)}")  # fmt: skip
    print("\nrules, as rules.yaml says now:")
    width = max((len(r.rule) for r in results), default=0)
    for r in results:
        print(f"  {r.rule:<{width}}  {'matched' if r.matched else 'not matched: ' + r.reason}")
    for c in comparisons:
        _print_comparison(c, now)
    if not deliveries:
        print("\nno deliveries: no rule matched this event when it arrived")
    if unsent:
        print(f"\nmatched now, but no delivery was made when the event arrived: {', '.join(unsent)}"
              " (rules added or changed since)")  # fmt: skip
    return EXIT_OK


def _print_comparison(c: Comparison, now: float) -> None:
    d = c.delivery
    print(f"\ndelivery {d.id}: {d.rule} -> {d.sink} (send {d.send_index}), {d.status},"
          f" {d.attempts} attempt(s), updated {when(d.updated_at, now)}")  # fmt: skip
    if d.last_error:
        print(f"  last error: {d.last_error}")
    if c.sent is None:
        print("  sent: no render stored (not attempted yet, its template failed, or it was sent"
              " before relay kept renders)")  # fmt: skip
    else:
        by = c.sent_by
        print(f"  sent by attempt {by.number if by else '?'}:")
        for key in sorted(c.sent):
            print(f"    {key}: {_one_line(c.sent[key])}")
    if c.note:
        print(f"  now: {c.note}")
    elif c.sent is not None:
        diff = c.diff()
        print("  now: the same message" if not diff else "  now, the differences (sent → now):")
        for line in diff:
            print(f"    {line}")
    elif c.now is not None:
        print("  now it would send:")
        for key in sorted(c.now):
            print(f"    {key}: {_one_line(c.now[key])}")


def _one_line(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _comparison_json(c: Comparison) -> dict[str, Any]:
    d = c.delivery
    return {
        "delivery": d.id,
        "rule": d.rule,
        "send_index": d.send_index,
        "sink": d.sink,
        "status": d.status.value,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "sent": c.sent,
        "sent_by_attempt": c.sent_by.number if c.sent_by else None,
        "now": c.now,
        "now_note": c.note,
        "same": c.sent is not None and c.now is not None and not c.diff(),
        "diff": c.diff(),
    }
