"""The ``suppression`` sink: adds the addresses an event names to relay's suppression list.

A rule sends to it as to any sink, so what suppresses an address is configuration, not code: a
hard bounce or a spam complaint from Resend's webhooks (``examples/resend-bounces``), a
"delete my data" event of your own. Per send:

- ``address`` (a template): the addresses, a list or a string of them separated by commas,
  each as ``normalise`` compares it (``Ada <ADA@Example.com>`` is ``ada@example.com``);
- ``reason`` (as written): ``bounced``, ``complained``, ``unsubscribed`` or ``manual``;
- ``scope`` (as written): ``all`` (the default: every email) or a category (``onboarding``).

An address that already has that scope keeps its first suppression (a retry, or a second bounce,
changes nothing). The suppression records the event's sender message id (``relay event ID``
shows it). Nothing leaves relay: the list is the store's (``SinkContext.suppressions``); a
store that cannot commit now is retried, any other store failure is permanent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import field_validator

from relay.errors import PayloadError, PermanentError, RetryableError, StoreError
from relay.errors import StoreUnavailableError as Unavailable
from relay.recipients.addresses import (
    ALL,
    Reason,
    Suppression,
    SuppressionList,
    addresses,
    normalise,
    scope_problem,
)
from relay.sinks.base import Message, SendFields, SinkContext, SinkSettings, SinkType

__all__ = ["SINK", "SuppressionSendFields", "SuppressionSettings", "SuppressionSink"]

WHAT = "add to the suppression list"


class SuppressionSettings(SinkSettings):
    """``type: suppression``: no settings of its own (the common ones apply)."""


class SuppressionSendFields(SendFields):
    """``address`` (a template); ``reason`` and ``scope`` as written, checked at load."""

    literal_fields: ClassVar[frozenset[str]] = frozenset({"reason", "scope"})
    address: str | list[str]
    reason: Reason
    scope: str = ALL

    @field_validator("scope")
    @classmethod
    def _check_scope(cls, scope: str) -> str:
        problem = scope_problem(scope)
        if problem:
            raise ValueError(problem)
        return scope


def _addresses(payload: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The normalised addresses of the rendered ``address``, and the parts that are none."""
    found, wrong = [], []
    for part in addresses(payload.get("address")):
        address = normalise(part)
        if address is None:
            wrong.append(part)
        elif address not in found:
            found.append(address)
    return found, wrong


def check(payload: Mapping[str, Any]) -> None:
    """``relay check``: a sample's ``address`` must render at least one address."""
    found, wrong = _addresses(payload)
    if not found:
        shown = f" ({', '.join(map(repr, wrong))} is no address)" if wrong else ""
        raise PayloadError(f"{WHAT}: `address` renders no address{shown}", path=("address",))


class SuppressionSink:
    """Adds each address of a message to the store's suppression list."""

    def __init__(self, settings: SuppressionSettings, context: SinkContext) -> None:
        if context.suppressions is None:
            raise ValueError("a suppression sink needs the store's suppression list")
        self._list: SuppressionList = context.suppressions
        self._clock = context.clock

    async def send(self, message: Message) -> None:
        payload = message.payload
        found, wrong = _addresses(payload)
        if not found:
            raise PermanentError(
                f"{WHAT}: `address` rendered no address ({payload.get('address')!r})"
            )
        reason, scope = Reason(str(payload["reason"])), str(payload.get("scope") or ALL)
        for address in found:
            suppression = Suppression(address, scope, reason, message.event_id, self._clock())
            try:
                await self._list.add_suppression(suppression)
            except Unavailable as exc:
                raise RetryableError(f"{WHAT}: {exc}") from exc
            except StoreError as exc:
                raise PermanentError(f"{WHAT}: {exc}") from exc
        if wrong:  # the others are added: a retry would change nothing
            raise PermanentError(f"{WHAT}: not an email address: {', '.join(map(repr, wrong))}")


def describe(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Labelled lines for ``relay preview``: who would be suppressed, why, from what."""
    found, wrong = _addresses(payload)
    lines = [("address", ", ".join(found) or "(none)")]
    lines += [("not an address", ", ".join(wrong))] if wrong else []
    scope = str(payload.get("scope") or ALL)
    lines += [("reason", str(payload.get("reason"))), ("scope", scope)]
    return lines


SINK = SinkType(
    name="suppression",
    settings=SuppressionSettings,
    build=SuppressionSink,
    send_fields=SuppressionSendFields,
    template_required=False,
    describe=describe,
    check=check,
)
