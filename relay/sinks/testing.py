"""The conformance table every sink passes: the built-in sinks, and yours.

The worker trusts a sink to classify each answer of its provider where it happens: a delivery, a
failure worth retrying (and when), or one that retrying cannot fix. This module is the table of
provider answers every sink is checked against, and a runner that plays each row with respx (the
provider mocked behind the shared ``httpx.AsyncClient``) and checks what the sink did:

=============  ==============================  ================================================
row            the provider                    the sink must
=============  ==============================  ================================================
2xx            gives its usual answer          deliver (no error), in one request to ``url``
4xx            answers 400, 401, 403, 404,     raise PermanentError naming the status
               422
429            answers 429, Retry-After: 30    raise RetryableError with ``retry_after_s`` 30,
                                               saying ``429`` and ``retry in 30 s``
5xx            answers 500, 502, 503, 504      raise RetryableError naming the status, with no
                                               ``retry_after_s``
timeout        times out connecting, writing,  raise RetryableError saying ``timed out after
               reading, or waiting for a       <timeout_s> s``
               pooled connection
connection     refuses, drops or resets it     raise RetryableError
retry          answers 503, then 2xx           deliver on the second send, with the same body
                                               and Idempotency-Key
what           answers 500                     raise an error whose text starts with
                                               ``<attempted>: 500``
answer         gives one of its own answers    raise what the case's ``Answer`` says: a
               (a case's ``answers``: a 2xx    RetryableError (with its ``retry_after_s``, if
               that is not its success, an     any) or a PermanentError, whose text says the
               error code of its own)          answer's ``says``
=============  ==============================  ================================================

and in every row, no string of ``secrets`` appears in the settings' ``repr`` or ``str``, nor in
the error's text or ``repr``. The ``answer`` rows are the case's own (``rows(case)`` lists the
table's rows and them): Resend's ``{}`` with a 200, or its two idempotency 409s, say.

A plugin's own test suite describes its sink once, as a ``SinkCase``, and runs the table with an
active respx router (respx's pytest fixture ``respx_mock``, or ``with respx.mock() as router``).
respx is a test dependency (``pip install respx``); this module does not import it, nor pytest::

    import httpx
    import pytest
    from relay.sinks import testing
    from my_relay_sinks.pager import SINK

    PAGER = testing.SinkCase(
        name="pager",
        sink_type=SINK,
        settings={"type": "pager", "routing_key": "rk-secret-0123"},
        payload={"summary": "New sign-up: Ada Lovelace"},
        url="https://events.pager.test/v2/enqueue",
        ok=lambda: httpx.Response(202, json={"status": "success"}),
        attempted="post to Pager",
        secrets=("rk-secret-0123",),
    )


    @pytest.mark.parametrize("scenario", testing.SCENARIOS, ids=str)
    def test_pager_conforms(scenario: testing.Scenario, respx_mock) -> None:
        testing.check(PAGER, scenario, respx_mock)

A provider's own answers join the table as ``answers=(testing.Answer("409-conflict", lambda:
httpx.Response(409, json=...), retryable=True, says=("409",)), ...)``.

``testing.run(PAGER, respx_mock)`` plays the whole table in one test instead, and reports every
row that failed. ``check_request`` lets a case check the exact request on top (body, headers, a
signature). A sink's provider quirks (its own error codes, its settings) belong in a short test file
of its own; ``send`` there builds the sink the way relay does and returns what each send raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import httpx

from relay.errors import DeliveryError, PermanentError, RetryableError
from relay.sinks.base import Message, SinkContext, SinkSettings, SinkType

if TYPE_CHECKING:
    from respx import MockRouter

__all__ = [
    "EVENT",
    "SCENARIOS",
    "Answer",
    "ConformanceError",
    "Outcome",
    "Scenario",
    "SinkCase",
    "check",
    "check_async",
    "message_for",
    "rows",
    "run",
    "send",
    "send_async",
]

Effect = httpx.Response | type[httpx.TransportError]
"""What the mocked provider does with one request: answer it, or fail it in transport."""

EVENT: Mapping[str, Any] = {
    "object": "event",
    "type": "user.created",
    "timestamp": 1654012591835,
    "instance_id": "ins_2Xp9",
    "data": {
        "id": "user_29w83sxmDNGwOuEthce5gg56FcC",
        "object": "user",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "primary_email_address_id": "idn_29w83yL7CwVlJXylYLxcslromF1",
        "email_addresses": [
            {"id": "idn_29w83yL7CwVlJXylYLxcslromF1", "object": "email_address",
             "email_address": "ada@example.com", "linked_to": []},
        ],
    },
}  # fmt: skip
"""The event envelope of the message a case sends, unless it names its own: a Clerk user.created."""


class ConformanceError(AssertionError):
    """A sink did not do what a row of the table requires; the text names the case and the row."""


def _no_body(status: int) -> Any:
    return {}


@dataclass(frozen=True, slots=True)
class Answer:
    """One of a provider's own answers, and what the sink must make of it: a ``RetryableError``
    (``retryable``; no sooner than ``retry_after_s`` when that is given) or a ``PermanentError``,
    whose text holds every string of ``says``."""

    name: str
    response: Callable[[], httpx.Response]
    retryable: bool
    says: tuple[str, ...] = ()
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class SinkCase:
    """One configured sink and its provider: what to build, what it sends, how the provider answers.

    ``settings`` is the sink's block of rules.yaml (validated by ``sink_type.settings``),
    ``payload`` the rendered message it sends, ``url`` and ``method`` where that goes, ``ok`` the
    provider's usual 2xx (a new response per call), ``attempted`` what every error text starts
    with (``"post to Pager"``), ``secrets`` every string that must never show,
    ``error_body(status)`` the JSON the provider sends with an error status, and ``answers`` the
    provider's own answers (the table's ``answer`` rows).
    """

    name: str
    sink_type: SinkType
    settings: Mapping[str, Any]
    payload: Mapping[str, Any]
    url: str
    ok: Callable[[], httpx.Response]
    attempted: str
    secrets: tuple[str, ...] = ()
    method: str = "POST"
    check_request: Callable[[httpx.Request, Message], None] | None = None
    error_body: Callable[[int], Any] = _no_body
    event: Mapping[str, Any] = field(default_factory=lambda: dict(EVENT))
    answers: tuple[Answer, ...] = ()

    def validated(self) -> SinkSettings:
        """The settings as rules.yaml's loader validates them."""
        return self.sink_type.settings.model_validate(dict(self.settings))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened in one row: the error of the last send (None: delivered), and every request
    the provider received."""

    error: DeliveryError | None
    requests: tuple[httpx.Request, ...]
    message: Message


E = TypeVar("E", bound=DeliveryError)


def _fail(what: str) -> NoReturn:
    raise ConformanceError(what)


def _raised(outcome: Outcome, kind: type[E]) -> E:
    error = outcome.error
    if not isinstance(error, kind):
        _fail(f"expected {kind.__name__}, got {error!r}")
    return error


def _says(error: DeliveryError, *parts: str) -> None:
    for part in parts:
        if part not in str(error):
            _fail(f"the error text {str(error)!r} does not say {part!r}")


def _delivered(case: SinkCase, outcome: Outcome, sends: int) -> None:
    if outcome.error is not None:
        _fail(f"expected a delivery, got {outcome.error!r}")
    if len(outcome.requests) != sends:
        _fail(f"expected {sends} request(s) to {case.url}, got {len(outcome.requests)}")
    last = outcome.requests[-1]
    if str(last.url) != case.url:
        _fail(f"sent to {last.url}, expected {case.url}")
    if sends > 1:
        first = outcome.requests[0]
        if first.content != last.content:
            _fail("the retry sent another body than the first attempt")
        if first.headers.get("idempotency-key") != last.headers.get("idempotency-key"):
            _fail("the retry carried another Idempotency-Key than the first attempt")
    if case.check_request is not None:
        case.check_request(last, outcome.message)


def _expect_2xx(case: SinkCase, outcome: Outcome) -> None:
    _delivered(case, outcome, sends=1)


def _expect_permanent(status: int) -> Callable[[SinkCase, Outcome], None]:
    def expect(case: SinkCase, outcome: Outcome) -> None:
        _says(_raised(outcome, PermanentError), str(status))

    return expect


def _expect_429(case: SinkCase, outcome: Outcome) -> None:
    error = _raised(outcome, RetryableError)
    if error.retry_after_s != 30:
        _fail(f"retry_after_s is {error.retry_after_s!r}, expected 30 (from Retry-After)")
    _says(error, "429", "retry in 30 s")


def _expect_5xx(status: int) -> Callable[[SinkCase, Outcome], None]:
    def expect(case: SinkCase, outcome: Outcome) -> None:
        error = _raised(outcome, RetryableError)
        if error.retry_after_s is not None:
            _fail(f"retry_after_s is {error.retry_after_s!r} though no Retry-After was sent")
        _says(error, str(status))

    return expect


def _expect_timeout(case: SinkCase, outcome: Outcome) -> None:
    _says(_raised(outcome, RetryableError), f"timed out after {case.validated().timeout_s:g} s")


def _expect_retryable(case: SinkCase, outcome: Outcome) -> None:
    _raised(outcome, RetryableError)


def _expect_retry(case: SinkCase, outcome: Outcome) -> None:
    _delivered(case, outcome, sends=2)


def _expect_what(case: SinkCase, outcome: Outcome) -> None:
    error = _raised(outcome, DeliveryError)
    if not str(error).startswith(f"{case.attempted}: 500"):
        _fail(f"the error text {str(error)!r} does not start with {case.attempted + ': 500'!r}")


def _expect_answer(answer: Answer) -> Callable[[SinkCase, Outcome], None]:
    def expect(case: SinkCase, outcome: Outcome) -> None:
        kind = RetryableError if answer.retryable else PermanentError
        error = _raised(outcome, kind)
        retry_after_s = getattr(error, "retry_after_s", None)
        if retry_after_s != answer.retry_after_s:
            _fail(f"retry_after_s is {retry_after_s!r}, expected {answer.retry_after_s!r}")
        _says(error, *answer.says)

    return expect


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the table: what the provider does with each send (one send per effect), and
    what the sink must have done."""

    group: str
    variant: str
    effects: Callable[[SinkCase], Sequence[Effect]]
    expect: Callable[[SinkCase, Outcome], None]

    def __str__(self) -> str:
        return f"{self.group}-{self.variant}" if self.variant else self.group


def _answer(
    status: int, headers: Mapping[str, str] | None = None
) -> Callable[[SinkCase], list[Effect]]:
    return lambda case: [httpx.Response(status, headers=headers, json=case.error_body(status))]


def _fails_with(exc: type[httpx.TransportError]) -> Callable[[SinkCase], list[Effect]]:
    return lambda case: [exc]


_TIMEOUTS = (httpx.ReadTimeout, httpx.ConnectTimeout, httpx.WriteTimeout, httpx.PoolTimeout)
_CONNECTION_FAILURES = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("2xx", "", lambda case: [case.ok()], _expect_2xx),
    *(Scenario("4xx", str(s), _answer(s), _expect_permanent(s)) for s in (400, 401, 403, 404, 422)),
    Scenario("429", "", _answer(429, {"Retry-After": "30"}), _expect_429),
    *(Scenario("5xx", str(s), _answer(s), _expect_5xx(s)) for s in (500, 502, 503, 504)),
    *(Scenario("timeout", e.__name__, _fails_with(e), _expect_timeout) for e in _TIMEOUTS),
    *(Scenario("connection", e.__name__, _fails_with(e), _expect_retryable)
      for e in _CONNECTION_FAILURES),
    Scenario("retry", "", lambda case: [httpx.Response(503), case.ok()], _expect_retry),
    Scenario("what", "", lambda case: [httpx.Response(500)], _expect_what),
)  # fmt: skip
"""The table, in the order of the module's docstring, but for each case's own ``answer`` rows."""


def rows(case: SinkCase) -> tuple[Scenario, ...]:
    """Every row ``case`` is checked against: the table's, then one per answer of its own."""
    own = (Scenario("answer", a.name, _gives(a), _expect_answer(a)) for a in case.answers)
    return (*SCENARIOS, *own)


def _gives(answer: Answer) -> Callable[[SinkCase], list[Effect]]:
    return lambda case: [answer.response()]


def message_for(case: SinkCase) -> Message:
    """The message every row sends: the case's payload, for its event."""
    return Message(
        delivery_id="dlv_01HZX",
        idempotency_key="msg_2abc:welcome:0",
        event_id="msg_2abc",
        event_type=str(case.event.get("type", "user.created")),
        rule="welcome",
        sink=case.name,
        payload=case.payload,
        event=case.event,
    )


async def send_async(
    sink_type: SinkType, settings: Mapping[str, Any] | SinkSettings, *messages: Message
) -> list[DeliveryError | None]:
    """Build the sink as relay does (validated settings, a shared ``httpx.AsyncClient``), send each
    message in turn and return what each send raised (None: delivered). Any exception other than
    a ``DeliveryError`` propagates: a sink must never raise one."""
    if not isinstance(settings, SinkSettings):
        settings = sink_type.settings.model_validate(dict(settings))
    results: list[DeliveryError | None] = []
    async with httpx.AsyncClient() as client:
        sink = sink_type.build(settings, SinkContext(client))
        try:
            for message in messages:
                try:
                    await sink.send(message)
                    results.append(None)
                except DeliveryError as exc:
                    results.append(exc)
        finally:
            close = getattr(sink, "aclose", None)
            if close is not None:
                await close()
    return results


def send(
    sink_type: SinkType, settings: Mapping[str, Any] | SinkSettings, *messages: Message
) -> list[DeliveryError | None]:
    """``send_async`` for a synchronous test (it runs its own event loop)."""
    return asyncio.run(send_async(sink_type, settings, *messages))


def _no_secret(case: SinkCase, error: DeliveryError | None) -> None:
    settings = case.validated()
    texts = {"the settings' repr": repr(settings), "the settings' str": str(settings)}
    if error is not None:
        texts |= {"the error text": str(error), "the error's repr": repr(error)}
    for where, text in texts.items():
        for secret in case.secrets:
            if secret in text:
                _fail(f"a secret is in {where}: {text!r}")


async def check_async(case: SinkCase, scenario: Scenario, router: MockRouter) -> None:
    """Play one row: the provider (a route of the active respx ``router`` for the case's method
    and URL) does each effect in turn, the sink sends the message once per effect; raise
    ``ConformanceError`` unless the sink did what the row requires."""
    effects = list(scenario.effects(case))
    route = router.route(method=case.method, url=case.url)
    route.reset()
    route.mock(side_effect=effects)
    message = message_for(case)
    try:
        errors = await send_async(case.sink_type, case.settings, *[message] * len(effects))
        outcome = Outcome(errors[-1], tuple(call.request for call in route.calls), message)
        scenario.expect(case, outcome)
        _no_secret(case, outcome.error)
    except AssertionError as exc:
        raise ConformanceError(f"{case.name}, row {scenario}: {exc}") from exc
    except Exception as exc:
        what = f"{type(exc).__name__}: {exc}"
        raise ConformanceError(
            f"{case.name}, row {scenario}: raised {what} (a sink raises only DeliveryErrors)"
        ) from exc


def check(case: SinkCase, scenario: Scenario, router: MockRouter) -> None:
    """``check_async`` for a synchronous test (it runs its own event loop)."""
    asyncio.run(check_async(case, scenario, router))


def run(case: SinkCase, router: MockRouter, scenarios: Sequence[Scenario] | None = None) -> None:
    """Play every row (``rows(case)`` unless ``scenarios`` are given); raise one
    ``ConformanceError`` that lists every row the sink failed."""
    scenarios = rows(case) if scenarios is None else scenarios
    failed: list[str] = []
    for scenario in scenarios:
        try:
            check(case, scenario, router)
        except ConformanceError as exc:
            failed.append(str(exc))
    if failed:
        raise ConformanceError(
            f"{case.name} fails {len(failed)} of {len(scenarios)} rows:\n" + "\n".join(failed)
        )
