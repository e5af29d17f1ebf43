"""Statements both backends run as they are: written with ``?`` placeholders (SQLite's);
``postgres(sql)`` is PostgreSQL's spelling of the same (``%s``). Only constants are composed in.
"""

from __future__ import annotations

from collections.abc import Collection

from relay.store import base
from relay.store.base import REPLAYABLE, REPLAYABLE_ON_REQUEST, DeliveryStatus

UNSENT = ", ".join(f"'{status}'" for status in base.UNSENT)  # as an SQL list

# Scheduled deliveries that have come due become pending (claimable), the earliest first: a
# walk of deliveries_scheduled that stops at the first one not yet due. Parameters: now (the
# update time), now, limit. ``{skip}``: PostgreSQL skips rows another replica is promoting.
PROMOTE = (
    "UPDATE deliveries SET status = 'pending', updated_at = ? WHERE id IN (SELECT id"
    " FROM deliveries WHERE status = 'scheduled' AND next_attempt_at <= ?"
    " ORDER BY next_attempt_at, id LIMIT ?{skip})"
)
# A claimed digest's batch takes no more events (its own claim closes it; see relay.store.steps).
CLOSE_BATCH = "UPDATE batches SET state = 'closed' WHERE id = ? AND state = 'open'"
# A digest's events: its batch's members for that send, in the order they were received.
DIGEST_EVENTS = (
    "SELECT e.body FROM deliveries d JOIN events e ON e.id = d.event_id"
    " WHERE d.batch_id = ? AND d.send_index = ? AND d.status = 'batched'"
    " ORDER BY e.received_at, e.id"
)
# An event whose history retention must keep (alias ``e``): a delivery not final, or one batched in
# a digest whose own delivery is not final (the digest reads its events' bodies when it is sent).
_SETTLED = ", ".join(f"'{status}'" for status in (*base.FINAL_STATUSES, DeliveryStatus.BATCHED))
STILL_NEEDED = (
    "EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id"  # noqa: S608 (constants only)
    f" AND (d.status NOT IN ({_SETTLED}) OR (d.status = 'batched' AND EXISTS (SELECT 1"
    f" FROM deliveries b WHERE b.batch_id = d.batch_id AND b.status NOT IN ({_SETTLED})))))"
)
# Batches whose deliveries are all gone (purged with their events, or never made: a lead's).
PURGE_BATCHES = (
    "DELETE FROM batches WHERE closes_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.batch_id = batches.id)"
)


def postgres(sql: str) -> str:
    return sql.replace("?", "%s")


def replayable(also: Collection[DeliveryStatus]) -> str:
    """The statuses a replay makes pending, as an SQL list: REPLAYABLE, and ``also`` (some of
    REPLAYABLE_ON_REQUEST; anything else is a ValueError)."""
    extra = [DeliveryStatus(s) for s in also]
    wrong = [s for s in extra if s not in REPLAYABLE_ON_REQUEST]
    if wrong:
        raise ValueError(f"cannot replay {', '.join(wrong)} deliveries")
    return ", ".join(f"'{status}'" for status in dict.fromkeys([*REPLAYABLE, *extra]))
