"""The worker's part of recipients (``relay.recipients``): before an email goes out, its
addresses are looked up in the suppression list (one probe of its key per address and scope).

The scopes that hold an email back are ``all`` and, for a send of a category (``unsubscribe:``),
that category. Then:

- no address suppressed: it is sent as rendered;
- every address of its first field (``to``) suppressed: it is not sent; the delivery is
  ``suppressed``, its reason naming each suppression (address, scope, reason, when, the event);
- some: they are taken out of the message (``to``, ``cc``, ``bcc``), which goes to the rest; the
  attempt's record holds what was sent, and the log line says who was left out and why.

A replayed delivery is looked up again: an address stays suppressed until ``relay suppressions
remove`` takes it off the list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay.recipients.addresses import ALL, Suppression, normalise
from relay.recipients.links import Recipients
from relay.store.base import Queue


@dataclass(frozen=True, slots=True)
class Screened:
    """What the suppression list makes of one email: the payload to send (None: none), and
    the suppressions that held an address back."""

    payload: Mapping[str, Any] | None
    held: tuple[Suppression, ...] = ()

    def reason(self) -> str:
        """Why the delivery is suppressed, or who was left out of it, in words."""
        return "; ".join(s.describe() for s in self.held)


async def screen(
    store: Queue, recipients: Recipients, category: str | None, payload: Mapping[str, Any]
) -> Screened:
    """``payload`` as it may go out, given the suppression list (see the module docstring)."""
    fields = recipients(payload)
    wanted = {a for raw in fields.values() for a in [normalise(r) for r in raw] if a is not None}
    if not wanted:
        return Screened(payload)
    scopes = [ALL] if category is None else [ALL, category]
    held = await store.suppressions_for(sorted(wanted), scopes)
    if not held:
        return Screened(payload)
    out = {s.address for s in held}
    held = sorted(held, key=lambda s: (s.address, s.scope))
    kept = {key: [r for r in raw if normalise(r) not in out] for key, raw in fields.items()}
    first = next(iter(kept), None)
    if first is None or not kept[first]:
        return Screened(None, tuple(held))
    return Screened({**payload, **kept}, tuple(held))
