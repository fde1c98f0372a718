"""Templating: a strict sandbox that renders item data and nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from launcher.spec.templating import TemplateFailure, Templates

CTX: dict[str, Any] = {
    "item": {"repo": "acme/api", "items": "a column", "acu": "4"},
    "vars": {"python": "3.12"},
    "campaign": "c1",
    "fleet": "f",
    "index": 3,
}


def render(source: str, **overrides: Any) -> str:
    return Templates().render(source, {**CTX, **overrides})


def failure(source: str, **overrides: Any) -> TemplateFailure:
    with pytest.raises(TemplateFailure) as info:
        render(source, **overrides)
    return info.value


def test_renders_the_context() -> None:
    assert (
        render("{{ item.repo }} {{ vars.python }} {{ campaign }}/{{ fleet }}#{{ index }}")
        == "acme/api 3.12 c1/f#3"
    )
    assert render("{{ item['repo'] | upper }}") == "ACME/API"


def test_plain_text_skips_jinja_and_keeps_newlines() -> None:
    t = Templates()
    assert t.compile("no markers") == "no markers"
    assert t.render("text\n", CTX) == "text\n"
    assert t.render("{{ item.repo }}\n", CTX) == "acme/api\n"


def test_a_key_of_the_item_wins_over_a_dict_method() -> None:
    assert render("{{ item.items }}") == "a column"


def test_default_applies_to_absent_values() -> None:
    assert render("{{ item.missing | default(8) }}") == "8"
    assert render("{% if item.notes is defined %}x{% else %}none{% endif %}") == "none"


def test_undefined_variables_are_errors_with_a_hint() -> None:
    exc = failure("{{ item.rpeo }}")
    assert exc.message.startswith("undefined variable:") and "rpeo" in exc.message
    assert exc.hint is not None and "did you mean 'repo'?" in exc.hint
    assert "this item has: repo, items, acu" in exc.hint
    assert "'nope' is undefined" in failure("{{ nope }}").message


def test_undefined_error_knows_its_line() -> None:
    assert failure("line 1\nline 2\n{{ item.nope }}\n").line == 3


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ item.__class__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ (1).__class__.__base__.__subclasses__() }}",
        "{{ ''.format.__globals__ }}",
    ],
)
def test_sandbox_escapes_are_refused(source: str) -> None:
    exc = failure(source)
    assert "sandbox" in exc.message and "unsafe" in exc.message


def test_the_data_cannot_be_changed() -> None:
    exc = failure("{{ item.update({'repo': 'x'}) }}")
    assert "sandbox" in exc.message or "unsafe" in exc.message
    assert CTX["item"]["repo"] == "acme/api"


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 100000000 }}",
        "{{ [1] * 10000000 }}",
        "{{ 10 ** 100000 }}",
        "{{ 'x' | center(1000000000) }}",
        "{{ '%*s' | format(1000000000, 'x') }}",
    ],
)
def test_huge_values_are_refused(source: str) -> None:
    assert "too large" in failure(source).message or "would build" in failure(source).message


def test_output_size_is_capped() -> None:
    exc = failure("{% for i in range(20000) %}{{ big }}{% endfor %}", big="x" * 100)
    assert "limit is 1,000,000" in exc.message


def test_syntax_errors_carry_the_line() -> None:
    t = Templates()
    with pytest.raises(TemplateFailure) as info:
        t.compile("ok\n{% if x %}\nno end\n")
    assert info.value.message.startswith("template syntax error:")
    with pytest.raises(TemplateFailure) as info:
        t.compile("one\ntwo {{ oops ")
    assert info.value.line == 2


def test_include_and_import_have_nothing_to_load() -> None:
    assert failure("{% include '/etc/passwd' %}").message.startswith("template")


def test_failing_filters_are_reported_not_raised() -> None:
    exc = failure("{{ (item.acu | int) / 0 }}")
    assert exc.message == "template failed: ZeroDivisionError: division by zero"


def test_set_does_not_leak_between_templates_of_one_item() -> None:
    render_item = Templates().bind(CTX)
    assert render_item("{% set x = 1 %}{{ x }}") == "1"
    with pytest.raises(TemplateFailure):
        render_item("{{ x }}")


def test_variables_lists_top_level_names() -> None:
    t = Templates()
    assert t.variables("{{ item.repo }}-{{ index }}") == {"item", "index"}
    assert t.variables("plain") == set()


ESCAPES_AFTER_WARM_UP = [
    "{{ ''.__class__.__mro__ }}",
    "{{ item.repo.__class__ }}",
    "{{ item.__class__ }}",
    "{{ ''.format.__globals__ }}",
    "{{ (1).__class__.__base__.__subclasses__() }}",
    "{% for x in [1] %}{{ loop.__class__ }}{% endfor %}",
    "{% for x in [1] %}{{ loop._iterable }}{% endfor %}",
    "{{ item.update({'repo': 'x'}) }}",
    "{{ item.pop('repo') }}",
    "{{ vars.list.append(1) }}",
    "{{ item.setdefault('repo', 'x') }}",
]


def test_remembered_verdicts_still_refuse_what_the_sandbox_refuses() -> None:
    """The sandbox remembers "safe" for attributes of plain data (a speed-up for templates
    with loops): after every plain type's safe attributes were read through one environment,
    each escape and mutation is still refused, and `str.format` still goes through the
    sandbox's formatter."""
    t = Templates()
    ctx = {**CTX, "vars": {"python": "3.12", "list": [1, 2]}}
    warm = (
        "{{ item.repo.upper() }}{{ item.repo.split('/') | join }}{{ item.keys() | list }}"
        "{{ vars.list.count(1) }}{{ (1).real }}{{ (1.5).is_integer() }}{{ (1, 2).index(2) }}"
        "{% for x in [1, 2] %}{{ loop.index }}{{ loop.last }}{% endfor %}"
    )
    for _ in range(2):  # the second pass reads through the remembered verdicts
        assert t.render(warm, ctx).startswith("ACME/APIacme")
    for source in ESCAPES_AFTER_WARM_UP:
        with pytest.raises(TemplateFailure) as info:
            t.render(source, ctx)
        assert "sandbox" in info.value.message or "unsafe" in info.value.message, source
    assert ctx["item"]["repo"] == "acme/api" and ctx["vars"]["list"] == [1, 2]
    with pytest.raises(TemplateFailure) as info:
        t.render("{{ '{0.__class__}'.format(item) }}", ctx)
    assert "unsafe" in info.value.message or "sandbox" in info.value.message
