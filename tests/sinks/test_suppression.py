"""The suppression sink: what it adds to the suppression list (normalised addresses, the rule's
reason and scope, the event's id, the relay's clock), how it classifies what fails, and what
`relay check` and the loader say about its sends. Registered like every built-in sink."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Collection
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.config import load_config
from relay.errors import (
    ConfigError,
    DeliveryError,
    PayloadError,
    PermanentError,
    RetryableError,
    StoreError,
    StoreUnavailableError,
)
from relay.recipients.addresses import Reason, Suppression
from relay.sinks.base import SinkContext, load_sink_types
from relay.sinks.suppression import SINK, check
from tests.conftest import TEST_ENV
from tests.sinks.quirks import message


class Listed:
    """An in-memory suppression list that can be told to fail."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.rows: dict[tuple[str, str], Suppression] = {}
        self.fail = fail

    async def add_suppression(self, suppression: Suppression) -> bool:
        if self.fail is not None:
            raise self.fail
        key = (suppression.address, suppression.scope)
        if key in self.rows:
            return False
        self.rows[key] = suppression
        return True

    async def suppressions_for(
        self, addresses: Collection[str], scopes: Collection[str]
    ) -> list[Suppression]:
        return [s for s in self.rows.values() if s.address in addresses and s.scope in scopes]

    async def remove_suppressions(self, address: str, scope: str | None = None) -> int:
        raise NotImplementedError

    async def list_suppressions(self, **filters: Any) -> list[Suppression]:
        return list(self.rows.values())


def send(listed: Listed, payload: dict[str, Any]) -> DeliveryError | None:
    async def run() -> DeliveryError | None:
        async with httpx.AsyncClient() as http:
            context = SinkContext(http, suppressions=listed, clock=lambda: 1234.5)
            sink = SINK.build(SINK.settings.model_validate({"type": "suppression"}), context)
            try:
                await sink.send(message(payload))
            except DeliveryError as exc:
                return exc
            return None

    return asyncio.run(run())


def test_it_is_a_built_in_sink_registered_like_the_others() -> None:
    assert load_sink_types()["suppression"] is SINK


def test_each_address_is_added_normalised_with_the_reason_scope_event_and_time() -> None:
    listed = Listed()
    payload = {"address": ["Ada <ADA@Example.com>", " grace@example.com "], "reason": "bounced"}
    assert send(listed, payload) is None
    assert sorted(listed.rows.values(), key=lambda s: s.address) == [
        Suppression("ada@example.com", "all", Reason.BOUNCED, "msg_1", 1234.5),
        Suppression("grace@example.com", "all", Reason.BOUNCED, "msg_1", 1234.5),
    ]


def test_a_string_of_addresses_and_a_category_scope() -> None:
    listed = Listed()
    payload = {"address": "ada@x.org, Bob <bob@x.org>", "reason": "manual", "scope": "onboarding"}
    assert send(listed, payload) is None
    assert set(listed.rows) == {("ada@x.org", "onboarding"), ("bob@x.org", "onboarding")}


def test_an_address_already_suppressed_keeps_its_first_cause() -> None:
    """A retry, or a second bounce, is harmless: the first suppression stays as it was."""
    listed = Listed()
    first = Suppression("ada@x.org", "all", Reason.COMPLAINED, "msg_0", 1.0)
    listed.rows[("ada@x.org", "all")] = first
    assert send(listed, {"address": ["ada@x.org"], "reason": "bounced"}) is None
    assert listed.rows == {("ada@x.org", "all"): first}


def test_no_address_is_permanent_and_adds_nothing() -> None:
    listed = Listed()
    error = send(listed, {"address": [], "reason": "bounced"})
    assert isinstance(error, PermanentError)
    assert str(error) == "add to the suppression list: `address` rendered no address ([])"
    assert listed.rows == {}


def test_parts_that_are_no_address_fail_permanently_after_the_rest_is_added() -> None:
    listed = Listed()
    error = send(listed, {"address": ["ada@x.org", "nobody"], "reason": "bounced"})
    assert isinstance(error, PermanentError)
    assert str(error) == "add to the suppression list: not an email address: 'nobody'"
    assert set(listed.rows) == {("ada@x.org", "all")}


@pytest.mark.parametrize(
    ("failure", "kind"),
    [(StoreUnavailableError("database is locked"), RetryableError),
     (StoreError("constraint failed"), PermanentError)],
)  # fmt: skip
def test_a_store_that_cannot_commit_now_is_retried_any_other_failure_is_permanent(
    failure: Exception, kind: type[DeliveryError]
) -> None:
    error = send(Listed(fail=failure), {"address": ["ada@x.org"], "reason": "bounced"})
    assert isinstance(error, kind)
    assert str(error) == f"add to the suppression list: {failure}"


def test_relay_check_refuses_a_sample_whose_address_renders_none() -> None:
    with pytest.raises(PayloadError, match=r"`address` renders no address \('x' is no address\)"):
        check({"address": "x", "reason": "bounced"})
    check({"address": ["ada@x.org"], "reason": "bounced"})


RULES = """\
version: 1
sinks:
  suppressions:
    type: suppression
rules:
  - name: suppress
    events: user.deleted
    send:
      - sink: suppressions
        address: "{{{{ data.id }}}}"
{fields}
"""


def load(tmp_path: Path, fields: str) -> None:
    (tmp_path / "templates").mkdir(exist_ok=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(fields=textwrap.indent(fields, " " * 8)), encoding="utf-8")
    load_config(rules, tmp_path / "templates", env=TEST_ENV)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ("reason: bounced", None),
        ("reason: bounced\nscope: onboarding", None),
        ("reason: bouncd", "reason: Input should be 'bounced', 'complained', 'unsubscribed' or"
                           " 'manual'"),
        ("reason: bounced\nscope: All Email", "scope: 'All Email' is not a scope: write all, or a"
                                              " category name"),
        ("scope: all", "missing required key 'reason'"),
        ("reason: bounced\ntemplate: x.yaml", "template 'x.yaml' not found"),
    ],
)  # fmt: skip
def test_its_send_fields_are_checked_at_load_with_their_line(
    tmp_path: Path, fields: str, error: str | None
) -> None:
    if error is None:
        load(tmp_path, fields)
        return
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, fields)
    assert any(error in str(d) and d.line >= 9 for d in refused.value.diagnostics), str(
        refused.value
    )
