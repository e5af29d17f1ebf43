"""The studio in a real browser (headless Chromium): the welcome email's HTML in its sandboxed
iframe, the Slack preview's text, the page following a template edited on disk, a broken
rules.yaml shown as its located error, and an event pasted into the page.

Each test starts its own `relay studio` on a copy of the shipped project (conftest.py).
"""

from __future__ import annotations

from typing import Any

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips, or fails under CI=true, saying so
    expect = None  # type: ignore[assignment]  # never called then: the tests skip or fail first

from tests.studio.conftest import Studio

USER_CREATED = "/?event=sample:user.created.json"


def test_the_welcome_email_html_shows_the_primary_address(page: Any, studio: Studio) -> None:
    """The email's HTML renders in its sandboxed iframe, addressed and greeting by the primary
    address; its text part is beside it."""
    page.goto(studio.url + USER_CREATED)
    email = page.locator('.send[data-sink="email"]')
    expect(email.locator(".to")).to_have_text("ada@example.com")
    frame = email.frame_locator("iframe.email-html")
    expect(frame.locator("strong")).to_have_text("ada@example.com")
    expect(frame.locator("h1")).to_have_text("Hi Ada,")
    assert email.locator("iframe.email-html").get_attribute("sandbox") == ""
    expect(email.locator(".email-text")).to_contain_text("sign in any time with\nada@example.com")


def test_the_slack_preview_shows_the_message(page: Any, studio: Studio) -> None:
    """The Slack message is drawn: its section's text, formatted."""
    page.goto(studio.url + USER_CREATED)
    slack = page.locator('.send[data-sink="slack-signups"] .slack')
    expect(slack.locator(".slack-text")).to_contain_text("New sign-up: Ada")
    expect(slack.locator(".slack-text strong")).to_have_text("New sign-up:")
    expect(slack.locator(".slack-text code")).to_have_text("user_2pQz8cRr0Kx4Hn7VbW1sYtU3mJe")


def test_the_page_follows_a_template_changed_on_disk(page: Any, studio: Studio) -> None:
    """Saving a template updates the page, iframe included, without a reload."""
    page.goto(studio.url + USER_CREATED)
    email = page.locator('.send[data-sink="email"]')
    expect(email.locator(".subject")).to_have_text("Welcome to Acme, Ada!")
    page.evaluate("window.studioMarker = 1")  # gone if the page were reloaded
    template = studio.project.templates / "welcome-email.yaml"
    text = template.read_text().replace("Welcome to Acme", "Welcome aboard")
    template.write_text(text.replace("<p>The Acme team</p>", "<p>Cheers, the Acme crew</p>"))
    expect(email.locator(".subject")).to_have_text("Welcome aboard, Ada!", timeout=3000)
    expect(email.frame_locator("iframe.email-html").locator("p").last).to_have_text(
        "Cheers, the Acme crew"
    )
    assert page.evaluate("window.studioMarker") == 1


def test_a_broken_rules_file_shows_its_located_error(page: Any, studio: Studio) -> None:
    """Breaking rules.yaml replaces the renders with the located error; fixing it brings them
    back."""
    page.goto(studio.url + USER_CREATED)
    expect(page.locator(".send")).to_have_count(2)
    rules = studio.project.rules
    good = rules.read_text()
    rules.write_text(good.replace("- sink: slack-signups", "- sink: slack-signup"))
    problems = page.locator(".problems")
    expect(problems).to_contain_text(
        f"{rules}:48:15: unknown sink 'slack-signup' (did you mean 'slack-signups'?)",
        timeout=3000,
    )
    expect(page.locator(".send")).to_have_count(0)
    rules.write_text(good)
    expect(page.locator(".send")).to_have_count(2, timeout=3000)
    expect(problems).to_have_count(0)


def test_an_event_pasted_into_the_page_is_previewed(page: Any, studio: Studio) -> None:
    """Pasting an event's JSON and asking for a preview shows what it would send."""
    page.goto(studio.url)
    page.fill("#paste", '{"type": "user.created", "data": {"id": "user_9", "first_name": "Grace"}}')
    page.click("#paste-form button")
    expect(page.locator("h1")).to_contain_text("pasted event 1")
    expect(page.locator('.send[data-sink="slack-signups"] .slack-text')).to_contain_text(
        "New sign-up: Grace"
    )
    page.fill("#paste", "{not json")
    page.click("#paste-form button")
    expect(page.locator("#paste-error")).to_have_text(
        "pasted event:1:2: invalid JSON: Expecting property name enclosed in double quotes"
    )
