"""The studio's pages over ASGI: each send drawn as its recipient sees it, rules that do not match
with their reason, located errors for broken files, pasted and stored events, and what it refuses.
(The page in a real browser: test_browser.py.)"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.config.samples import PreviewSend
from relay.settings import Settings
from relay.store.base import EventRecord
from relay.studio.app import create_studio_app
from tests.conftest import ROOT, TEST_ENV, Project

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)


def settings_of(project: Project) -> Settings:
    return Settings(
        rules_path=project.rules, templates_dir=project.templates, samples_dir=project.samples
    )


@pytest.fixture
async def studio(project: Project) -> AsyncIterator[httpx.AsyncClient]:
    app = create_studio_app(settings_of(project))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8050") as client:
        yield client


async def page(client: httpx.AsyncClient, event: str = "") -> str:
    response = await client.get("/", params={"event": event} if event else None)
    assert response.status_code == 200
    return response.text


def sends(text: str) -> dict[str, str]:
    """Each drawn send's HTML, by sink."""
    found = re.findall(r'<div class="send send-\w+" data-sink="([^"]+)">(.*?)\n</div>', text, re.S)
    return dict(found)


async def test_the_welcome_email_is_drawn_with_its_html_sandboxed(
    studio: httpx.AsyncClient,
) -> None:
    """The email shows from, to (the primary address), subject, its HTML in a sandboxed iframe
    (as srcdoc) and its text part beside it."""
    email = sends(await page(studio, "sample:user.created.json"))["email"]
    assert "<dt>From</dt><dd>Acme &lt;hello@acme.example&gt;</dd>" in email
    assert '<dt>To</dt><dd class="to">ada@example.com</dd>' in email
    assert '<dd class="subject">Welcome to Acme, Ada!</dd>' in email
    (srcdoc,) = re.findall(r'<iframe class="email-html" sandbox="" srcdoc="([^"]*)"', email)
    assert "<strong>ada@example.com</strong>" in html.unescape(srcdoc)
    assert "ada.old@example.org" not in email
    assert '<pre class="email-text">Hi Ada,\n\nThanks for signing up' in email


async def test_an_email_of_a_category_shows_its_unsubscribe_headers(project: Project) -> None:
    """With `unsubscribe:` the email's header list shows List-Unsubscribe (the link, escaped)
    and List-Unsubscribe-Post, under its subject."""
    project.edit_rules(
        "    when: primary_email(data)\n", "    when: primary_email(data)\n    unsubscribe: news\n"
    )
    app = create_studio_app(settings_of(project))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8050") as client:
        email = sends(await page(client, "sample:user.created.json"))["email"]
    assert (
        '<dt>List-Unsubscribe</dt><dd class="header">&lt;https://relay.acme.example/unsubscribe/'
        in email
    )
    assert '<dt>List-Unsubscribe-Post</dt><dd class="header">List-Unsubscribe=One-Click</dd>' in (
        email
    )


async def test_the_slack_alert_is_drawn_like_slack(studio: httpx.AsyncClient) -> None:
    """The Slack message: its section's mrkdwn as Slack formats it, and the notification text."""
    slack = sends(await page(studio, "sample:user.created.json"))["slack-signups"]
    assert (
        '<div class="slack-text"><strong>New sign-up:</strong> Ada<br>Email: ada@example.com'
        in slack
    )
    assert "Clerk id: <code>user_2pQz8cRr0Kx4Hn7VbW1sYtU3mJe</code>" in slack
    assert (
        'notification text: <q class="slack-fallback">New sign-up: Ada (ada@example.com)</q>'
        in slack
    )


async def test_rules_that_do_not_match_say_why(studio: httpx.AsyncClient) -> None:
    """A rule that does not match is listed with its reason: the pattern, or the condition and
    its value; the matrix marks each event against each rule."""
    text = await page(studio, "sample:user.created.phone-only.json")
    assert (
        "<li><b>welcome-email</b>: condition `primary_email(data)` is false: it is null</li>"
        in text
    )
    assert "<li><b>membership-sync</b>: user.created does not match " in text
    assert "email" not in sends(text)
    assert 'title="welcome-email: matched"' in text  # user.created.json's row


async def test_an_http_request_shows_no_secret(project: Project) -> None:
    """An HTTP send shows method, URL and headers with every configured value masked and the
    URL's token and password hidden; its body as pretty JSON. A secret that event data carries
    into the message (or that the event holds) is redacted too."""
    project.edit_rules(
        "    method: POST\n",
        "    method: PUT\n    headers:\n      Authorization: Bearer s3cr3t-t0ken-value\n",
    )
    secret_url = "https://sync:hunter22@api.example/members?token=tok_abcdef123456"
    sample = project.samples / "organizationMembership.created.json"
    sample.write_text(sample.read_text().replace('"org:member"', '"tok_abcdef123456"'))
    app = create_studio_app(settings_of(project))
    transport = httpx.ASGITransport(app=app)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MEMBERSHIP_SYNC_URL", secret_url)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            text = await page(client, "sample:organizationMembership.created.json")
    http = sends(text)["membership-sync"]
    assert "<b>PUT</b> https://sync:***@api.example/members?token=[redacted]\n" in http
    assert "Authorization: ••••••\nContent-Type: application/json\n" in http
    assert "&#34;action&#34;: &#34;added&#34;," in http
    assert "&#34;role&#34;: &#34;[redacted]&#34;," in http
    for secret in ("s3cr3t", "hunter22", "tok_abcdef"):
        assert secret not in text


async def test_a_sql_send_shows_its_statement_and_parameters(tmp_path: Path) -> None:
    """A SQL send shows the statement as written and each parameter's rendered value."""
    example = ROOT / "examples" / "sql-sync"
    settings = Settings(
        rules_path=example / "rules.yaml",
        templates_dir=ROOT / "templates",
        samples_dir=example / "samples",
    )
    transport = httpx.ASGITransport(app=create_studio_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        sql = sends(await page(client, "sample:user.created.json"))["app-db"]
    assert '<pre class="sql">INSERT INTO users (clerk_id, email, first_name' in sql
    assert "<tr><td>:email</td><td><code>&#34;ada@example.com&#34;</code></td></tr>" in sql
    assert "<tr><td>:last_name</td><td><code>null</code></td></tr>" in sql


async def test_a_hostile_name_never_becomes_markup(
    studio: httpx.AsyncClient, project: Project
) -> None:
    """Event data with HTML in it is text everywhere on the page: escaped in the email's HTML
    (then escaped again into srcdoc), in Slack, in the headers."""
    sample = project.samples / "user.created.json"
    sample.write_text(sample.read_text().replace('"Ada"', '"<script>alert(1)</script>"'))
    text = await page(studio, "sample:user.created.json")
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the subject, the Slack text
    (srcdoc,) = re.findall(r'srcdoc="([^"]*)"', text)
    assert "&lt;script&gt;" in html.unescape(srcdoc)  # escaped inside the email itself


async def test_a_broken_rules_file_shows_its_located_errors(
    studio: httpx.AsyncClient, project: Project
) -> None:
    """A broken rules.yaml: the page shows each located error instead of any render."""
    project.edit_rules("- sink: slack-signups", "- sink: slack-signup")
    text = await page(studio, "sample:user.created.json")
    assert "The configuration is invalid (1)" in text
    assert (
        f"<code>{project.rules}:48:15: unknown sink &#39;slack-signup&#39; "
        "(did you mean &#39;slack-signups&#39;?)</code>"
    ) in text
    assert sends(text) == {}


async def test_a_broken_sample_is_listed_and_the_others_still_render(
    studio: httpx.AsyncClient, project: Project
) -> None:
    """A sample that is not JSON is a located problem; the other samples still render."""
    project.write("samples/bad.json", '{"type": "user.created",\n  oops}')
    text = await page(studio, "sample:user.created.json")
    assert f"<code>{project.samples}/bad.json:2:3: invalid JSON" in text
    assert "email" in sends(text)


async def test_the_fingerprint_follows_the_files(
    studio: httpx.AsyncClient, project: Project
) -> None:
    """The fingerprint the page polls changes when a template, the rules or a sample changes,
    and the fragment is rendered from the files as they are now."""
    before = await studio.get("/fragment", params={"event": "sample:user.created.json"})
    assert '<dd class="subject">Welcome to Acme, Ada!</dd>' in before.text
    seen = [(await studio.get("/fingerprint")).json()["fingerprint"]]
    for path in (
        project.templates / "welcome-email.yaml",
        project.rules,
        project.samples / "user.created.json",
    ):
        path.write_text(path.read_text() + "\n")
        seen.append((await studio.get("/fingerprint")).json()["fingerprint"])
    assert len(set(seen)) == 4
    template = project.templates / "welcome-email.yaml"
    template.write_text(template.read_text().replace("Welcome to Acme", "Welcome aboard"))
    fragment = await studio.get("/fragment", params={"event": "sample:user.created.json"})
    assert '<dd class="subject">Welcome aboard, Ada!</dd>' in fragment.text
    assert (
        fragment.headers["x-studio-fingerprint"]
        == (await studio.get("/fingerprint")).json()["fingerprint"]
    )


async def test_a_pasted_event_is_rendered(studio: httpx.AsyncClient) -> None:
    """A pasted event gets a key the page opens; it is listed with the samples."""
    event = '{"type": "user.created", "data": {"first_name": "Grace", "id": "user_9"}}'
    answer = await studio.post("/events", content=event)
    assert answer.json() == {"event": "pasted:1"}
    text = await page(studio, "pasted:1")
    assert "New sign-up: Grace (no email address)" in text
    assert '<a href="/?event=pasted%3A1" data-event="pasted:1">pasted event 1</a>' in text


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (
            "{oops",
            400,
            "pasted event:1:2: invalid JSON: Expecting property name enclosed in double quotes",
        ),
        (
            '{"data": {}}',
            400,
            "pasted event:1:1: an event needs a string 'type' (e.g. user.created)",
        ),
        ('{"type": "x", "pad": "' + "x" * 1024 * 1024 + '"}', 413, "an event is at most 1 MiB"),
    ],
)
async def test_a_pasted_non_event_is_refused(
    studio: httpx.AsyncClient, body: str, status: int, error: str
) -> None:
    """Not JSON, not an event, or too large: refused with the reason, nothing kept."""
    answer = await studio.post("/events", content=body)
    assert (answer.status_code, answer.json()) == (status, {"error": error})


@dataclasses.dataclass
class ReadOnlyLog:
    """A delivery log that records what is asked of it and can answer get_event only."""

    events: dict[str, EventRecord]
    calls: list[str] = dataclasses.field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the studio called {name} on the delivery log")

    async def open(self, create: bool = True, *, upgrade: bool = False) -> None:
        self.calls.append(f"open(create={create}, upgrade={upgrade})")

    async def close(self) -> None:
        self.calls.append("close")

    async def get_event(self, id_or_message_id: str) -> EventRecord | None:
        self.calls.append(f"get_event({id_or_message_id})")
        return self.events.get(id_or_message_id)


async def test_a_stored_event_is_read_through_the_delivery_log_only(project: Project) -> None:
    """With a delivery log, ?event=stored:ID renders the stored event; the log is opened
    without creating anything and only get_event is called."""
    body = (project.samples / "user.created.json").read_bytes()
    log = ReadOnlyLog({"evt_1": EventRecord("evt_1", "clerk", "msg_1", "user.created", 1.0, body)})
    app = create_studio_app(settings_of(project), log=log)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            text = await page(client, "stored:evt_1")
            missing = await page(client, "stored:evt_nope")
    assert '<dd class="subject">Welcome to Acme, Ada!</dd>' in text
    assert '<input name="stored"' in text
    assert "no stored event evt_nope" in missing
    assert log.calls == [
        "open(create=False, upgrade=False)",
        "get_event(evt_1)",
        "get_event(evt_nope)",
        "close",
    ]


async def test_without_a_database_there_are_no_stored_events(studio: httpx.AsyncClient) -> None:
    """Without --database the page offers no stored events and opens none."""
    text = await page(studio, "stored:evt_1")
    assert '<input name="stored"' not in text
    assert "no stored event evt_1" in text


async def test_what_preview_adds_is_shown_too(
    studio: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A field that preview's results gain (a send's schedule, say) shows with its value,
    though the page knows nothing of it."""
    import relay.studio.workspace as workspace
    from relay.config import samples

    @dataclasses.dataclass(frozen=True)
    class LaterSend(PreviewSend):
        goes_out: str = "in 1h, unless user.deleted comes first"

    real = samples.preview  # what workspace.preview is until patched

    def preview(config: Any, event: Any, only: str | None = None) -> Any:
        return [
            dataclasses.replace(r, sends=[LaterSend(**vars_of(s)) for s in r.sends])
            for r in real(config, event, only)
        ]

    monkeypatch.setattr(workspace, "preview", preview)
    text = await page(studio, "sample:user.created.json")
    assert '<p class="extra"><b>goes_out</b> in 1h, unless user.deleted comes first</p>' in text


def vars_of(send: PreviewSend) -> dict[str, Any]:
    return {f.name: getattr(send, f.name) for f in dataclasses.fields(send)}


async def test_it_answers_only_to_a_local_host(studio: httpx.AsyncClient) -> None:
    """A request naming another host (DNS rebinding) is refused; pages carry a strict CSP."""
    assert (await studio.get("/", headers={"Host": "evil.example"})).status_code == 400
    response = await studio.get("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]


async def test_the_script_and_styles_are_served(studio: httpx.AsyncClient) -> None:
    """The page's own script and style sheet are served from the package."""
    assert "/fingerprint" in (await studio.get("/static/studio.js")).text
    assert ".slack" in (await studio.get("/static/studio.css")).text


async def test_without_samples_the_page_says_what_to_do(
    studio: httpx.AsyncClient, project: Project
) -> None:
    """With no sample event the page says so and how to add one."""
    for sample in project.samples.glob("*.json"):
        sample.unlink()
    text = await page(studio)
    assert "No event yet" in text
    assert "add a sample event to the samples folder, or paste one" in text
