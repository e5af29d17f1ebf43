"""Ingest: a webhook's raw body → its source verifies and splits it → each event stored, with the
deliveries its rules start, in one durable commit → 2xx. ``endpoint`` is the ASGI endpoint;
``budget`` bounds the request bodies held in memory across all requests."""

from relay.ingest.endpoint import IngestEndpoint

__all__ = ["IngestEndpoint"]
