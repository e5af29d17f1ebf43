"""The worker's part of workflows (``relay.workflow``): a delivery that came due outside its
send window waits for the window's next opening, and a digest is rendered over its batch."""

from __future__ import annotations

from typing import Any

from relay import deepjson
from relay.rules import Rule
from relay.store.base import ClaimedDelivery, Queue
from relay.workflow.spec import Timing


async def defer_outside_window(
    store: Queue, claimed: ClaimedDelivery, timing: Timing | None, now: float
) -> float | None:
    """If ``now`` is outside the send's window (in its event's time zone, as its rule says
    now), move the delivery to the window's next opening, as scheduled and without an attempt
    (a retry, a replay, a reload that changed the window); return that opening. None when it
    may go now."""
    if timing is None or timing.window is None:
        return None
    opening = timing.open_at(now, _envelope(claimed.body))
    if opening <= now:
        return None
    await store.defer(claimed.id, opening, lease=claimed.lease_until, scheduled=True)
    return opening


async def digest_events(
    store: Queue, claimed: ClaimedDelivery, rule: Rule | None, event: Any
) -> list[Any] | None:
    """A digest's events: its batch's, oldest first (a lead's, with ``first: now``, is its own
    event alone); None for a delivery that is no digest."""
    if claimed.batch_id is not None:
        bodies = await store.digest_events(claimed.batch_id, claimed.send_index)
        return [deepjson.loads(body) for body in bodies]  # any depth: what senders signed
    if rule is not None and rule.workflow.digest is not None:
        return [event]
    return None


def _envelope(body: bytes) -> Any:
    """The event's envelope, or an empty one if its body is not a JSON object (the window's time
    zone is then the default)."""
    try:
        event = deepjson.loads(body)  # any depth (json.loads: RecursionError past ~1,000)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}
