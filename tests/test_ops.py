"""The ops endpoints in process: what /metrics and /readyz cost the store however many ask, and
what /readyz says while the store cannot commit or the worker cannot claim."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.errors import StoreError, StoreUnavailableError
from relay.server.app import create_app
from relay.settings import Settings
from relay.store import ClaimedDelivery, NewDelivery, NewEvent, QueueStats
from relay.store.sqlite import SQLiteStore
from relay.store.steps import IngestResult, Step
from tests.test_ingest import BODY, config, header_dict

pytestmark = pytest.mark.anyio


class ScriptedStore(SQLiteStore):
    """A real SQLite store whose queue reads are counted (and slow), and whose ingest, claims
    and probe fail while told to."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.stats_reads = 0
        self.ingest_error: StoreError | None = None
        self.claim_error: StoreError | None = None
        self.probe_error: StoreError | None = None

    async def queue_stats(self, now: float) -> QueueStats:
        self.stats_reads += 1
        await asyncio.sleep(0.05)  # a scan of a long backlog
        return await super().queue_stats(now)

    async def admit(
        self, event: NewEvent, deliveries: Sequence[NewDelivery], steps: Sequence[Step] = ()
    ) -> IngestResult:
        """Every ingest, with or without workflow steps (``ingest`` goes through ``admit``)."""
        if self.ingest_error is not None:
            raise self.ingest_error
        return await super().admit(event, deliveries, steps)

    async def claim_due(
        self,
        now: float,
        limit: int,
        lease_s: float,
        sink: str | None = None,
        rules: Collection[str] | None = None,
    ) -> list[ClaimedDelivery]:
        if self.claim_error is not None:
            raise self.claim_error
        return await super().claim_due(now, limit, lease_s, sink, rules)

    async def probe(self) -> None:
        if self.probe_error is not None:
            raise self.probe_error
        await super().probe()


@asynccontextmanager
async def serving(tmp_path: Path, *, worker: bool) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    store = ScriptedStore(tmp_path / "relay.db")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'relay.db'}", worker=worker)
    app = create_app(settings, config(), store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
            yield client, app


async def until(what: str, check: Any, timeout_s: float = 5.0) -> Any:
    for _ in range(int(timeout_s / 0.02)):
        if result := await check():
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: not reached after {timeout_s} s")


async def test_the_queue_is_read_once_however_many_ask(tmp_path: Path) -> None:
    """100 concurrent /metrics and /readyz requests cost the store one queue read; another
    burst right after costs none; once the figures are old enough, one read again."""
    async with serving(tmp_path, worker=False) as (client, app):
        store = app.state.relay.store
        burst = [client.get(path) for path in ("/metrics", "/readyz") * 50]
        answers = await asyncio.gather(*burst)
        assert {answer.status_code for answer in answers} == {200}
        assert store.stats_reads == 1
        await asyncio.gather(*(client.get("/metrics") for _ in range(50)))
        assert store.stats_reads == 1
        app.state.ops.stats.max_age_s = 0.0
        await asyncio.gather(*(client.get("/metrics") for _ in range(50)))
        assert store.stats_reads == 2


async def test_readyz_is_503_while_the_worker_cannot_claim(tmp_path: Path) -> None:
    """While every claim fails (a damaged page, say), /readyz is 503 saying so and since when;
    the first claim that succeeds makes it ready again."""
    async with serving(tmp_path, worker=True) as (client, app):
        assert (await client.get("/readyz")).status_code == 200
        store = app.state.relay.store
        store.claim_error = StoreError("claim due deliveries: database disk image is malformed")

        async def not_ready() -> httpx.Response | None:
            answer = await client.get("/readyz")
            return answer if answer.status_code == 503 else None

        answer = await until("/readyz 503", not_ready)
        assert answer.json()["status"] == "not_ready"
        failing = answer.json()["failing"]
        assert list(failing) == ["claims"]
        assert failing["claims"]["error"] == (
            "claim due deliveries: database disk image is malformed"
        )
        store.claim_error = None

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await until("/readyz ready again", ready)


async def test_readyz_is_503_while_ingest_cannot_commit(tmp_path: Path) -> None:
    """An ingest that could not commit (503 to its sender) makes /readyz 503 with the store's
    error. A failure that may pass (unavailable) is lifted by the store's probe with no new
    ingest; a hard one only by a commit that succeeds."""
    async with serving(tmp_path, worker=False) as (client, app):
        store = app.state.relay.store
        store.ingest_error = StoreUnavailableError("ingest: database or disk is full")
        store.probe_error = StoreUnavailableError("probe: 0 bytes free")
        posted = await client.post("/webhooks/clerk", content=BODY, headers=header_dict("m1"))
        assert posted.status_code == 503
        answer = await client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["failing"]["store"]["error"] == "ingest: database or disk is full"
        store.probe_error = None
        app.state.ops.probe.max_age_s = 0.0
        assert (await client.get("/readyz")).status_code == 200

        store.ingest_error = StoreError("ingest: database disk image is malformed")
        posted = await client.post("/webhooks/clerk", content=BODY, headers=header_dict("m2"))
        assert posted.status_code == 503
        assert (await client.get("/readyz")).status_code == 503  # the probe cannot lift it
        store.ingest_error = None
        posted = await client.post("/webhooks/clerk", content=BODY, headers=header_dict("m3"))
        assert posted.status_code == 200
        assert (await client.get("/readyz")).json() == {"status": "ready", "rules": 3}


async def test_metrics_are_rendered_once_for_every_request_waiting(tmp_path: Path) -> None:
    """50 concurrent /metrics requests share one rendering; the next 50 share the next one,
    which starts after they asked: an event accepted before them is counted in what they get."""
    async with serving(tmp_path, worker=False) as (client, app):
        rendered = app.state.ops.rendered
        rendered.interval_s = 0.05
        first = await asyncio.gather(*(client.get("/metrics") for _ in range(50)))
        assert rendered.made == 1
        assert len({answer.text for answer in first}) == 1
        posted = await client.post("/webhooks/clerk", content=BODY, headers=header_dict("m1"))
        assert posted.status_code == 200
        second = await asyncio.gather(*(client.get("/metrics") for _ in range(50)))
        assert rendered.made == 2
        accepted = 'outcome="accepted",reason="",source="clerk",type="user.created"} 1.0'
        assert all(accepted in answer.text for answer in second)
        assert accepted not in first[0].text
