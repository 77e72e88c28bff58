"""Compiled templates and parsed packs are cached, and an edited folder is still picked up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nurture.errors import ConfigError
from nurture.messaging.templates import TemplateError, TemplateStore
from nurture.pack import load_pack


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    # A later mtime even on file systems with coarse timestamps.
    stamp = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def test_a_template_is_compiled_once_and_recompiled_when_a_file_changes(tmp_path: Path) -> None:
    write(tmp_path / "hello" / "subject.txt", "Hi {{ name }}")
    write(tmp_path / "hello" / "body.txt", "Body 1")
    store = TemplateStore([tmp_path], recheck_seconds=0)
    first = store.render("hello", {"name": "Ann"})
    assert (first.subject, first.text) == ("Hi Ann", "Body 1")
    compiled = store._compiled["hello"]
    store.render("hello", {"name": "Bob"})
    assert store._compiled["hello"] is compiled  # unchanged files: the same compiled template
    write(tmp_path / "hello" / "body.txt", "Body 2 {{ name }}")
    assert store.render("hello", {"name": "Ann"}).text == "Body 2 Ann"
    # A file that appears, and meta.yaml, are part of what is watched.
    write(tmp_path / "hello" / "body.html", "<p>{{ name }}</p>")
    assert store.render("hello", {"name": "Ann"}).html == "<p>Ann</p>"
    write(tmp_path / "hello" / "meta.yaml", "required: [name]\n")
    with pytest.raises(TemplateError, match="required variable"):
        store.render("hello", {"name": ""})
    (tmp_path / "hello" / "body.html").unlink()
    assert store.render("hello", {"name": "Ann"}).html is None


def test_within_the_recheck_period_the_compiled_template_is_used(tmp_path: Path) -> None:
    write(tmp_path / "hello" / "subject.txt", "Hi")
    write(tmp_path / "hello" / "body.txt", "Body 1")
    store = TemplateStore([tmp_path], recheck_seconds=3600)
    assert store.render("hello", {}).text == "Body 1"
    write(tmp_path / "hello" / "body.txt", "Body 2")
    assert store.render("hello", {}).text == "Body 1"  # no stat per e-mail
    store.recheck_seconds = 0
    assert store.render("hello", {}).text == "Body 2"


def test_a_broken_edit_fails_naming_the_file_and_a_fix_is_picked_up(tmp_path: Path) -> None:
    write(tmp_path / "hello" / "subject.txt", "Hi")
    write(tmp_path / "hello" / "body.txt", "ok")
    store = TemplateStore([tmp_path], recheck_seconds=0)
    store.render("hello", {})
    write(tmp_path / "hello" / "body.txt", "{% if %}")
    with pytest.raises(TemplateError, match=r"hello/body\.txt"):
        store.render("hello", {})
    write(tmp_path / "hello" / "body.txt", "fixed")
    assert store.render("hello", {}).text == "fixed"


def test_inline_templates_are_compiled_once_per_source() -> None:
    store = TemplateStore([])
    assert store.render_string("{{ a }}-{{ b }}", {"a": 1, "b": 2}) == "1-2"
    assert store.render_string("{{ a }}-{{ b }}", {"a": 3, "b": 4}) == "3-4"
    assert len(store._strings) == 1


def test_the_pack_is_parsed_once_and_reread_when_its_files_change(tmp_path: Path) -> None:
    write(tmp_path / "rules.yaml", "rules: []\n")
    first = load_pack(tmp_path)
    assert [loc.value for loc in first.section("rules")] == [[]]
    # Each caller gets its own copy: changing one never changes what the next caller reads.
    first.sections["rules"][0].value.append({"id": "mutated"})
    assert [loc.value for loc in load_pack(tmp_path).section("rules")] == [[]]
    write(tmp_path / "rules.yaml", "rules: [{id: a}]\n")
    assert [loc.value for loc in load_pack(tmp_path).section("rules")] == [[{"id": "a"}]]
    write(tmp_path / "more" / "segments.yml", "segments: {x: 1}\n")
    assert load_pack(tmp_path).section("segments")[0].value == {"x": 1}
    (tmp_path / "more" / "segments.yml").unlink()
    assert load_pack(tmp_path).section("segments") == []
    # Template meta.yaml files are not pack sections, cached or not.
    write(tmp_path / "templates" / "t" / "meta.yaml", "description: x\n")
    assert load_pack(tmp_path).section("description") == []
    write(tmp_path / "rules.yaml", "rules: [\n")
    with pytest.raises(ConfigError, match=r"rules\.yaml"):
        load_pack(tmp_path)
