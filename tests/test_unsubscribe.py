"""The one-click unsubscribe endpoint in process (relay.server.unsubscribe): POST unsubscribes
at once and answers 200 (again: 200); GET shows a page that changes nothing; a forged, cut-short
or other-category token is a 400 and changes nothing; only the public port of a relay that
serves the webhooks answers, and only with a real secret."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict

import httpx
import pytest

from relay.config import Config, load_config
from relay.config.model import Mode
from relay.errors import StoreUnavailableError
from relay.recipients.addresses import Reason, Suppression
from relay.server.app import create_app
from relay.settings import Settings
from relay.store.sqlite import SQLiteStore
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.anyio

T0 = 1_772_442_845.0


class Request(TypedDict, total=False):
    """httpx's request keyword arguments that these tests pass."""

    content: bytes
    headers: dict[str, str]


ONE_CLICK: Request = {"content": b"List-Unsubscribe=One-Click",
                      "headers": {"content-type": "application/x-www-form-urlencoded"}}  # fmt: skip
RULES = """\
version: 1
sources:
  clerk:
    path: /webhooks/clerk
    secret: ${CLERK_WEBHOOK_SIGNING_SECRET}
sinks:
  email:
    type: resend
    api_key: ${RESEND_API_KEY}
    from: Acme <hello@acme.example>
rules:
  - name: tips
    events: user.created
    unsubscribe: onboarding
    send:
      - sink: email
        template: tips.yaml
        to: "{{ data.email }}"
"""


class FlakyStore(SQLiteStore):
    fail: bool = False

    async def add_suppression(self, suppression: Suppression) -> bool:
        if self.fail:
            raise StoreUnavailableError("database is locked")
        return await super().add_suppression(suppression)


def config(tmp_path: Path, env: dict[str, str] | None = None, mode: str = "serve") -> Config:
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "templates" / "tips.yaml").write_text('subject: "Tips"\ntext: "x"\n')
    (tmp_path / "rules.yaml").write_text(RULES)
    return load_config(
        tmp_path / "rules.yaml", tmp_path / "templates", env=TEST_ENV if env is None else env,
        mode=mode,  # type: ignore[arg-type]
    )  # fmt: skip


class Relay:
    def __init__(self, client: httpx.AsyncClient, app: Any, store: FlakyStore) -> None:
        self.client, self.app, self.store = client, app, store

    def path(self, address: str, category: str = "onboarding") -> str:
        links = self.app.state.relay.config.unsubscribe
        token: str = links.keys.sign(address, category)
        return "/unsubscribe/" + token

    def counted(self, method: str, outcome: str) -> float:
        registry = self.app.state.relay.metrics.registry
        labels = {"method": method, "outcome": outcome}
        return registry.get_sample_value("relay_unsubscribe_requests_total", labels) or 0.0


@asynccontextmanager
async def serving(
    tmp_path: Path, loaded: Config | None = None, **settings: Any
) -> AsyncIterator[Relay]:
    store = FlakyStore(tmp_path / "relay.db")
    app = create_app(
        Settings(worker=False, **settings), loaded or config(tmp_path), store, clock=lambda: T0
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
            yield Relay(client, app, store)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    async with serving(tmp_path) as served:
        yield served


async def test_a_post_unsubscribes_at_once_and_again_is_still_200(relay: Relay) -> None:
    """RFC 8058: the provider's POST is the unsubscribe; no cookie, no confirmation step."""
    answer = await relay.client.post(relay.path("ada@example.com"), **ONE_CLICK)
    assert answer.status_code == 200
    assert "ada@example.com will get no more onboarding emails." in answer.text
    assert "set-cookie" not in answer.headers
    assert await relay.store.list_suppressions() == [
        Suppression("ada@example.com", "onboarding", Reason.UNSUBSCRIBED, None, T0)
    ]
    again = await relay.client.post(relay.path("ada@example.com"), **ONE_CLICK)
    assert again.status_code == 200
    assert len(await relay.store.list_suppressions()) == 1
    assert (relay.counted("POST", "unsubscribed"), relay.counted("POST", "already")) == (1, 1)


async def test_a_post_needs_no_body(relay: Relay) -> None:
    assert (await relay.client.post(relay.path("ada@example.com"))).status_code == 200
    assert len(await relay.store.list_suppressions()) == 1


def forgeries(path: str) -> dict[str, str]:
    key_id, payload, mac = path.removeprefix("/unsubscribe/").split(".")
    other = base64.urlsafe_b64encode(b"newsletter\nada@example.com").rstrip(b"=").decode()
    someone = base64.urlsafe_b64encode(b"onboarding\nbob@example.com").rstrip(b"=").decode()
    return {
        "forged": f"/unsubscribe/{key_id}.{payload}.{'A' * 43}",
        "truncated": path[:-5],
        "mac cut to 30 bytes": f"/unsubscribe/{key_id}.{payload}.{mac[:40]}",
        "other category": f"/unsubscribe/{key_id}.{other}.{mac}",
        "other address": f"/unsubscribe/{key_id}.{someone}.{mac}",
        "nothing": "/unsubscribe/",
        "a path below": f"{path}/x",
    }


@pytest.mark.parametrize("how", ["forged", "truncated", "mac cut to 30 bytes", "other category",
                                 "other address", "nothing", "a path below"])  # fmt: skip
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_token_relay_did_not_make_is_a_400_and_changes_nothing(
    relay: Relay, how: str, method: str
) -> None:
    path = forgeries(relay.path("ada@example.com"))[how]
    answer = await relay.client.request(
        method, path, **(ONE_CLICK if method == "POST" else Request())
    )
    assert answer.status_code == 400
    assert "This unsubscribe link is not valid" in answer.text
    assert await relay.store.list_suppressions() == []
    assert relay.counted(method, "refused") == 1


async def test_a_get_shows_a_page_with_a_button_and_changes_nothing(relay: Relay) -> None:
    """Mail scanners fetch links: a GET only shows what the button would do, autoescaped,
    with a plain form (no JavaScript) that POSTs to the same link."""
    address = '"<b>ada</b>"@example.com'
    answer = await relay.client.get(relay.path(address))
    assert answer.status_code == 200
    assert "Stop sending onboarding emails to &#34;&lt;b&gt;ada&lt;/b&gt;&#34;@example.com?" in (
        answer.text
    )
    assert '<form method="post">' in answer.text
    assert "<script" not in answer.text
    assert await relay.store.list_suppressions() == []
    assert relay.counted("GET", "shown") == 1


async def test_every_answer_forbids_caching_framing_scripts_and_referrers(relay: Relay) -> None:
    for answer in (
        await relay.client.get(relay.path("ada@example.com")),
        await relay.client.post(relay.path("ada@example.com")),
        await relay.client.get("/unsubscribe/nope"),
    ):
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in answer.headers["content-security-policy"]


async def test_other_methods_and_large_bodies_are_refused(relay: Relay) -> None:
    path = relay.path("ada@example.com")
    assert (await relay.client.put(path)).status_code == 405
    large = await relay.client.post(path, content=b"x" * 10_000)
    assert large.status_code == 413
    assert await relay.store.list_suppressions() == []


async def test_a_store_that_cannot_commit_is_a_503_to_try_again(relay: Relay) -> None:
    relay.store.fail = True
    answer = await relay.client.post(relay.path("ada@example.com"))
    assert answer.status_code == 503
    relay.store.fail = False
    assert await relay.store.list_suppressions() == []


async def test_it_is_on_the_public_port_only(tmp_path: Path) -> None:
    """With an ops port, the links answer on the public port; the ops port, which serves only
    operators, answers 404 for them."""
    async with serving(tmp_path, port=8000, ops_port=9000) as relay:
        path = relay.path("ada@example.com")
        on_ops = await relay.client.post(f"http://relay:9000{path}")
        assert on_ops.status_code == 404
        assert await relay.store.list_suppressions() == []
        assert (await relay.client.post(f"http://relay:8000{path}")).status_code == 200


async def test_a_relay_that_only_delivers_serves_no_links(tmp_path: Path) -> None:
    """`relay worker` (no webhooks) is not where the public goes."""
    async with serving(tmp_path, ingest=False) as relay:
        assert (await relay.client.post(relay.path("ada@example.com"))).status_code == 404


@pytest.mark.parametrize("mode", ["no secret", "placeholder"])
async def test_without_a_real_secret_there_are_no_links(tmp_path: Path, mode: str) -> None:
    """No secret (no rule uses unsubscribe), or `relay check`'s placeholder links: 404."""
    env = {k: v for k, v in TEST_ENV.items() if k != "RELAY_UNSUBSCRIBE_SECRET"}
    rules = RULES if mode == "placeholder" else RULES.replace("    unsubscribe: onboarding\n", "")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "tips.yaml").write_text('subject: "Tips"\ntext: "x"\n')
    (tmp_path / "rules.yaml").write_text(rules)
    serve_or_dry_run: Mode = "serve" if mode == "no secret" else "dry-run"
    loaded = load_config(
        tmp_path / "rules.yaml", tmp_path / "templates", env=env, mode=serve_or_dry_run
    )
    placeholder = loaded.unsubscribe
    assert (placeholder is None) is (mode == "no secret")
    async with serving(tmp_path, loaded) as relay:
        token = "k.p.m" if placeholder is None else placeholder.keys.sign("ada@x.org", "onboarding")
        answer = await relay.client.post(f"/unsubscribe/{token}")
        assert answer.status_code == 404
