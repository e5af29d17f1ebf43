"""Templates: Clerk helpers, autoescaping, strict undefined, the sandbox, data templates."""

from __future__ import annotations

from typing import Any

import pytest

from relay.errors import TemplateError
from relay.templates import (
    Environments,
    TextTemplate,
    Where,
    compile_data,
    display_name,
    event_context,
    primary_email,
    render_data,
)

ENVS = Environments.for_dir(None)


def render(source: str, data: Any, *, html: bool = False) -> str:
    env = ENVS.html if html else ENVS.text
    return TextTemplate(env, source, Where("t.yaml", 10)).render(event_context({"data": data}))


def address(id_: str, email: str) -> dict[str, Any]:
    return {"id": id_, "object": "email_address", "email_address": email}


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (
            {
                "primary_email_address_id": "b",
                "email_addresses": [address("a", "old@x.io"), address("b", "new@x.io")],
            },
            "new@x.io",
        ),
        ({"primary_email_address_id": None, "email_addresses": [address("a", "a@x.io")]}, None),
        ({"primary_email_address_id": "a", "email_addresses": []}, None),
        ({"primary_email_address_id": "zzz", "email_addresses": [address("a", "a@x.io")]}, None),
        (
            {"primary_email_address_id": "a", "email_addresses": [{"id": "a", "email": "a@x.io"}]},
            None,
        ),
        ({"primary_email_address_id": "a", "email_addresses": [address("a", "  ")]}, None),
        ({"primary_email_address_id": "a", "email_addresses": None}, None),
        ({"id": "user_1", "object": "user", "deleted": True}, None),
        ("not a user", None),
        (None, None),
    ],
    ids=[
        "not-first",
        "null-id",
        "empty-list",
        "id-matches-nothing",
        "wrong-field",
        "blank",
        "list-null",
        "deleted-user",
        "string",
        "none",
    ],
)
def test_primary_email_uses_primary_id_never_the_first_entry(
    user: Any, expected: str | None
) -> None:
    """primary_email finds the entry whose id is primary_email_address_id, or None."""
    assert primary_email(user) == expected


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"first_name": "Ada", "last_name": "Lovelace"}, "Ada Lovelace"),
        ({"first_name": "Ada", "last_name": None}, "Ada"),
        ({"first_name": None, "last_name": "Lovelace"}, "Lovelace"),
        ({"first_name": " ", "last_name": None, "username": "ada"}, "ada"),
        ({"first_name": None, "last_name": None, "username": None}, "there"),
        ({"id": "user_1", "deleted": True}, "there"),
        (None, "there"),
    ],
)
def test_display_name_copes_with_missing_names(user: Any, expected: str) -> None:
    """display_name falls back from full name to either name, username, then 'there'."""
    assert display_name(user) == expected


def test_html_parts_are_autoescaped() -> None:
    """A name like <script> is escaped in HTML parts."""
    out = render(
        "<p>Hi {{ data.first_name }}</p>", {"first_name": "<script>alert(1)</script>"}, html=True
    )
    assert out == "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>"


def test_text_parts_are_not_escaped() -> None:
    """Plain-text parts (subject, text) keep characters as they are."""
    assert render("Hi {{ data.first_name }}", {"first_name": "Tom & <Jerry>"}) == "Hi Tom & <Jerry>"


def test_undefined_variable_fails_with_its_line() -> None:
    """A misspelt field fails loudly with the template's file and line, not a blank."""
    template = TextTemplate(ENVS.text, "line one\n{{ data.frist_name }}", Where("t.yaml", 10))
    with pytest.raises(TemplateError) as info:
        template.render(event_context({"data": {"first_name": "Ada"}}))
    assert (
        str(info.value)
        == "t.yaml:11: undefined variable: 'dict object' has no attribute 'frist_name'"
    )


def test_none_renders_as_empty_string() -> None:
    """A null field renders as nothing, not the word None."""
    assert render("[{{ data.last_name }}]", {"last_name": None}) == "[]"


@pytest.mark.parametrize(
    "source",
    [
        "{{ data.__class__.__mro__ }}",
        "{{ ''.__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ data.update({'x': 1}) }}",
        "{% set l = [] %}{{ l.append(1) }}",
        "{{ primary_email.__globals__ }}",
    ],
)
def test_sandbox_refuses_attribute_tricks(source: str) -> None:
    """Dunder access and mutation of data are refused by the immutable sandbox."""
    with pytest.raises(TemplateError):
        render(source, {"x": 1})


def test_event_data_with_jinja_syntax_is_text_not_code() -> None:
    """A first name of '{{ 7*7 }}' renders literally; event data is never executed."""
    assert render("Hi {{ data.first_name }}", {"first_name": "{{ 7*7 }}"}) == "Hi {{ 7*7 }}"


def test_huge_output_is_refused() -> None:
    """Rendering that produces an enormous message fails instead of exhausting memory."""
    with pytest.raises(TemplateError, match="output is larger than"):
        render("{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", {})


def test_data_template_keeps_native_types() -> None:
    """In data templates a lone {{ expr }} keeps its type; mixed strings render to text."""
    compiled = compile_data(
        ENVS.text,
        {"count": "{{ data.n }}", "label": "n={{ data.n }}", "items": ["{{ data.tags }}", 3]},
        lambda path: Where("b.yaml", 1),
    )
    out = render_data(compiled, event_context({"data": {"n": 5, "tags": ["a", "b"]}}))
    assert out == {"count": 5, "label": "n=5", "items": [["a", "b"], 3]}


def test_data_template_undefined_fails() -> None:
    """A native leaf naming a missing field fails rather than sending null."""
    compiled = compile_data(ENVS.text, {"x": "{{ data.nope }}"}, lambda path: Where("b.yaml", 4))
    with pytest.raises(TemplateError, match=r"b\.yaml:4: undefined variable"):
        render_data(compiled, event_context({"data": {}}))


def test_slack_parts_escape_event_data_but_not_the_template() -> None:
    """A name like <!channel> cannot ping a channel; the template's own link markup stays."""
    template = TextTemplate(
        ENVS.slack, "<https://app.example/u|{{ data.first_name }}> & co", Where("s.yaml", 1)
    )
    out = template.render(event_context({"data": {"first_name": "<!channel> & <b>"}}))
    assert out == "<https://app.example/u|&lt;!channel&gt; &amp; &lt;b&gt;> & co"


def test_slack_data_leaves_are_escaped_too() -> None:
    """Native string leaves in Slack blocks get the same escaping; numbers keep their type."""
    compiled = compile_data(
        ENVS.slack, {"t": "{{ data.name }}", "n": "{{ data.n }}"}, lambda p: Where("b.yaml", 1)
    )
    out = render_data(compiled, event_context({"data": {"name": "<!here>", "n": 3}}))
    assert out == {"t": "&lt;!here&gt;", "n": 3}
