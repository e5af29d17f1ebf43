"""The durable store: events, deliveries and attempts behind one narrow interface."""

from relay.store.base import (
    Attempt,
    ClaimedDelivery,
    DeliveryStatus,
    IngestOutcome,
    NewDelivery,
    NewEvent,
    Store,
)

__all__ = [
    "Attempt",
    "ClaimedDelivery",
    "DeliveryStatus",
    "IngestOutcome",
    "NewDelivery",
    "NewEvent",
    "Store",
]
