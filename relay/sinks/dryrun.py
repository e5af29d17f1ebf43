"""The dry-run stand-in for every sink: renders, logs what would be sent, sends nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from relay.sinks.base import Message

log = logging.getLogger("relay.dryrun")


@dataclass(frozen=True, slots=True)
class DryRunSink:
    sink_type: str

    async def send(self, message: Message) -> None:
        # Recipient and subject only: bodies stay out of logs (`relay preview` shows them).
        shown = {k: v for k, v in message.payload.items() if k in ("to", "subject")}
        log.info(
            "dry run: would send",
            extra={
                "fields": {
                    "delivery_id": message.delivery_id,
                    "rule": message.rule,
                    "sink": message.sink,
                    "sink_type": self.sink_type,
                    "idempotency_key": message.idempotency_key,
                    "parts": sorted(message.payload),
                    **{f"would_{k}": v for k, v in shown.items()},
                }
            },
        )
