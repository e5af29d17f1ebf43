"""A running relay's live state and its lifespan: what starts before the first request and stops
after the last (the store, the shared HTTP client, the sinks built from the config, hot reload,
and the in-process worker with its retention purge).

``RelayState`` is the swappable part: a reload replaces its config and the sinks built from it.
``lifespan(state)`` is what ``relay.server.app.create_app`` hands to Starlette.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import httpx

from relay.config import Config, Mode
from relay.delivery.retention import Purger
from relay.delivery.worker import Runtime, Worker
from relay.health import Health
from relay.ingest.budget import BodyBudget
from relay.metrics import Metrics
from relay.recipients.addresses import SuppressionList
from relay.reload import Reloader
from relay.settings import Settings
from relay.sinks.base import Sink, SinkContext
from relay.sinks.client import make_http_client
from relay.sinks.dryrun import DryRunSink
from relay.store.base import Store

log = logging.getLogger("relay.app")  # the name its lines have always had


def build_sinks(
    config: Config,
    http: httpx.AsyncClient,
    *,
    dry_run: bool,
    suppressions: SuppressionList | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Sink]:
    """A ready sink per configured sink (or its dry-run stand-in); ``suppressions`` is the
    store's list, for the ``suppression`` sink."""
    if dry_run:
        return {name: DryRunSink(spec.type.name) for name, spec in config.sinks.items()}
    context = SinkContext(http=http, suppressions=suppressions, clock=clock)
    return {name: spec.type.build(spec.settings, context) for name, spec in config.sinks.items()}


async def close_sinks(sinks: Iterable[Sink], after_s: float) -> None:
    """Call each sink's optional ``aclose()`` (pools, connections) after ``after_s``."""
    await asyncio.sleep(after_s)
    for sink in sinks:
        aclose = getattr(sink, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception as exc:
                log.warning("closing a sink failed", extra={"fields": {"error": str(exc)}})


@dataclass
class RelayState:
    """The live, swappable part of a running relay: config and the sinks built from it."""

    settings: Settings
    config: Config
    store: Store
    clock: Callable[[], float] = time.time
    metrics: Metrics = field(default_factory=Metrics)
    health: Health = field(default_factory=Health)
    budget: BodyBudget = field(init=False)
    runtime: Runtime | None = None
    worker: Worker | None = None
    http: httpx.AsyncClient | None = None
    ready: bool = False
    shutdown_started: float | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.budget = BodyBudget(self.settings.max_buffered_bytes)

    @property
    def mode(self) -> Mode:
        return "dry-run" if self.settings.dry_run else "serve"

    def current_runtime(self) -> Runtime:
        assert self.runtime is not None, "the relay has not started"
        return self.runtime

    def apply(self, config: Config) -> None:
        """Swap in a validated config; deliveries already queued use what still exists.

        The sinks it replaces are closed once attempts already running on them have had time
        to finish (their own timeout)."""
        assert self.http is not None
        old = self.runtime
        self.config = config
        dry_run, store, clock = self.settings.dry_run, self.store, self.clock
        sinks = build_sinks(config, self.http, dry_run=dry_run, suppressions=store, clock=clock)
        self.runtime = Runtime(config, sinks, self.clock())
        sends = [(rule.name, send.sink) for rule in config.rules for send in rule.sends]
        emails = [(r, s) for r, s in sends if config.sinks[s].type.recipients is not None]
        self.metrics.prepare(config.sinks, sends, config.sources, emails)
        if old is not None:
            linger_s = max((s.settings.timeout_s for s in old.config.sinks.values()), default=0)
            self.tasks.append(asyncio.create_task(close_sinks(old.sinks.values(), linger_s + 1)))

    def stored(self) -> None:
        """Ingest committed new deliveries: the worker may have work now."""
        if self.worker is not None:
            self.worker.wake()

    def begin_shutdown(self) -> None:
        """A shutdown signal arrived: stop claiming new work and start the grace clock."""
        if self.shutdown_started is None:
            self.shutdown_started = time.monotonic()
        if self.worker is not None:
            self.worker.begin_stop()

    def grace_left(self) -> float:
        if self.shutdown_started is None:
            return self.settings.shutdown_grace_s
        spent = time.monotonic() - self.shutdown_started
        return max(0.0, self.settings.shutdown_grace_s - spent)


def lifespan(state: RelayState) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """The app's lifespan: ``start`` before the first request, ``stop`` after the last."""

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        await start(state)
        try:
            yield
        finally:
            await stop(state)

    return run


async def start(state: RelayState) -> None:
    """Open the store, build the sinks, watch the config, start the worker; then ready."""
    settings, store, clock = state.settings, state.store, state.clock
    await store.open(upgrade=settings.db_upgrade)
    state.http = make_http_client()
    state.apply(state.config)
    state.metrics.reloaded(True, clock())
    reloader = Reloader(
        settings, state.mode, state.apply, lambda ok: state.metrics.reloaded(ok, clock())
    )
    state.tasks.append(asyncio.create_task(reloader.watch()))
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGHUP,
            lambda: state.tasks.append(asyncio.create_task(_reload_quietly(reloader))),
        )
    if settings.worker:
        released = await store.release_all_leases()
        if released:
            log.info(
                "released leases left by a previous run", extra={"fields": {"count": released}}
            )
        state.worker = Worker(
            store,
            state.current_runtime,
            clock=clock,
            metrics=state.metrics,
            health=state.health,
            lease_margin_s=settings.lease_margin_s,
        )
        state.tasks.append(asyncio.create_task(state.worker.run()))
        purger = Purger(store, lambda: state.config.retention_s, state.metrics, clock=clock)
        state.tasks.append(asyncio.create_task(purger.run()))
    # Everything built so far lives as long as the process: keep it out of the cyclic GC,
    # whose full passes over it otherwise stall every request in flight (tens of ms).
    gc.collect()
    gc.freeze()
    state.ready = True
    config = state.config
    log.info(
        "relay started",
        extra={
            "fields": {
                "sources": {s.name: s.path for s in config.sources.values()},
                "sinks": sorted(config.sinks),
                "rules": len(config.rules),
                "worker": settings.worker,
                "ingest": settings.ingest,
                "dry_run": settings.dry_run,
            }
        },
    )


async def stop(state: RelayState) -> None:
    """Not ready; the worker stops within what is left of the grace period; then the tasks, the
    sinks, the HTTP client and the store close."""
    state.ready = False
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    if state.worker is not None:
        await state.worker.stop(state.grace_left())
    for task in state.tasks:
        task.cancel()
    await asyncio.gather(*state.tasks, return_exceptions=True)
    if state.runtime is not None:
        await close_sinks(state.runtime.sinks.values(), 0)
    if state.http is not None:
        await state.http.aclose()
    await state.store.close()
    log.info("relay stopped")


async def _reload_quietly(reloader: Reloader) -> None:
    await reloader.reload("SIGHUP")
