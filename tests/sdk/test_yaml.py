"""_yaml: document splitting, safe parsing (tags, aliases, bombs, depth) and error positions."""

import subprocess
import sys
import time
from typing import Any

import pytest

from mapper_sdk import _yaml
from mapper_sdk.errors import YamlError


def parse_one(text: str) -> Any:
    (chunk,) = _yaml.split_documents(text, "f.yaml")
    return _yaml.parse(chunk)[0]


def refused(text: str) -> str:
    """The one problem ``parse`` raises for ``text``, as ``str(problem)``."""
    problems = []
    for chunk in _yaml.split_documents(text, "f.yaml"):
        try:
            _yaml.parse(chunk)
        except YamlError as exc:
            problems.extend(exc.problems)
    (problem,) = problems
    return str(problem)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


# --- splitting ---------------------------------------------------------------------------------


def test_single_document_is_one_chunk_from_line_1() -> None:
    (chunk,) = _yaml.split_documents("a: 1\nb: 2\n", "f.yaml")
    assert (chunk.first_line, chunk.index, chunk.text) == (1, 0, "a: 1\nb: 2\n")


def test_documents_keep_their_first_line() -> None:
    text = "a: 1\n---\nb: 2\nc: 3\n--- # third\nd: 4\n"
    chunks = _yaml.split_documents(text, "f.yaml")
    assert [(c.first_line, c.index) for c in chunks] == [(1, 0), (2, 1), (5, 2)]
    assert [_yaml.parse(c)[0] for c in chunks] == [{"a": 1}, {"b": 2, "c": 3}, {"d": 4}]


def test_leading_comments_and_directives_join_the_next_document() -> None:
    text = "# header\n%YAML 1.2\n---\na: 1\n...\n# between\n---\nb: 2\n---\n"
    chunks = _yaml.split_documents(text, "f.yaml")
    assert [(c.first_line, c.index) for c in chunks] == [(1, 0), (6, 1), (9, 2)]
    assert [_yaml.parse(c)[0] for c in chunks] == [{"a": 1}, {"b": 2}, None]


def test_dashes_that_are_not_markers_do_not_split() -> None:
    text = "a: ---\nb: |\n  ----\n  text\n---x: 1\n"
    assert len(_yaml.split_documents(text, "f.yaml")) == 1


# --- values: YAML 1.2 core schema --------------------------------------------------------------


def test_yaml_12_scalars() -> None:
    text = "a: yes\nb: on\nc: NO\nd: 0o17\ne: 017\nf: 2024-01-01\ng: ~\nh: 1.5\ni: true\n"
    assert parse_one(text) == {
        "a": "yes",
        "b": "on",
        "c": "NO",
        "d": 15,
        "e": 17,
        "f": "2024-01-01",
        "g": None,
        "h": 1.5,
        "i": True,
    }


def test_empty_document_is_none() -> None:
    assert parse_one("# only a comment\n") is None


# --- refusals ----------------------------------------------------------------------------------


def test_syntax_error_has_line_and_column_in_the_file() -> None:
    text = "a: 1\n---\nb: 2\n---\nc: [1, 2\nd: 3\n"
    assert refused(text) == "f.yaml:6:2: YAML syntax error: illegal placement of ':' indicator"


def test_python_tag_is_refused_with_its_position() -> None:
    text = "a: 1\nb: !!python/object/new:os.system [echo hi]\n"
    assert refused(text) == (
        "f.yaml:2:4: YAML tags are not allowed (found !!python/object/new:os.system); "
        "remove the tag and write a plain value"
    )


@pytest.mark.parametrize("text", ["a: !custom x\n", "- !!str 5\n", "a: [1, !t 2]\n", "!t\na: 1\n"])
def test_every_tag_is_refused(text: str) -> None:
    assert "YAML tags are not allowed" in refused(text)


def test_exclamation_marks_in_text_are_not_tags() -> None:
    text = "a: 'hi !there'\nb: \"x, !y\"\nc: wow!\nd: ! # comment !x\n"
    with pytest.raises(YamlError):  # "d: !" is a (non-specific) tag
        parse_one(text)
    assert parse_one("a: 'hi !there'\nb: \"x, !y\"\nc: wow! # !x\n") == {
        "a": "hi !there",
        "b": "x, !y",
        "c": "wow!",
    }


def test_alias_is_refused_at_the_alias() -> None:
    assert refused("base: &b {x: 1}\nother: *b\n") == (
        "f.yaml:2:8: YAML aliases are not allowed (*b); write the value out"
    )


def test_merge_key_alias_is_refused() -> None:
    assert "aliases are not allowed" in refused("base: &b {x: 1}\nd:\n  <<: *b\n")


def test_anchor_without_alias_is_harmless() -> None:
    assert parse_one("a: &x 1\n") == {"a": 1}


def test_billion_laughs_is_refused_fast() -> None:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        refs = ",".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{refs}]")
    text = "\n".join(lines) + "\n"
    start = time.perf_counter()
    message = refused(text)
    assert time.perf_counter() - start < 0.1
    assert message == "f.yaml:2:10: YAML aliases are not allowed (*l0); write the value out"


def test_duplicate_key_is_refused_at_the_second_key() -> None:
    text = "a: 1\nspec:\n  x: 1\n  y: 2\n  x: 3\n"
    assert refused(text) == "f.yaml:5:3: duplicate key 'x' (first set on line 3)"


def test_duplicate_key_line_counts_from_the_file_start() -> None:
    text = "a: 1\n---\nb: 1\nb: 2\n"
    assert refused(text) == "f.yaml:4:1: duplicate key 'b' (first set on line 3)"


def test_deep_flow_nesting_is_refused_fast() -> None:
    start = time.perf_counter()
    message = refused("a: " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert time.perf_counter() - start < 0.1
    assert message.startswith("f.yaml:1:")
    assert message.endswith("YAML nesting is too deep")


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deep_block_nesting_is_refused_fast(depth: int) -> None:
    # yaml_rs itself has no limit here and crashes the interpreter at ~50,000 levels.
    start = time.perf_counter()
    message = refused("- " * depth + "x\n")
    assert time.perf_counter() - start < 0.1
    assert message == "f.yaml:1:129: YAML nesting is deeper than 64 levels"


def test_deep_indentation_is_refused() -> None:
    text = "".join(" " * i + f"k{i}:\n" for i in range(100)) + " " * 100 + "leaf: 1\n"
    assert refused(text) == "f.yaml:65:65: YAML nesting is deeper than 64 levels"  # k64's map


def test_deep_but_allowed_indentation_parses() -> None:
    text = "".join(" " * i + f"k{i}:\n" for i in range(40)) + " " * 40 + "leaf: 1\n"
    value = parse_one(text)
    for i in range(40):
        value = value[f"k{i}"]
    assert value == {"leaf": 1}


def test_hostile_nesting_does_not_crash_a_fresh_interpreter() -> None:
    code = (
        "from mapper_sdk import _yaml\n"
        "from mapper_sdk.errors import YamlError\n"
        "chunk = _yaml.split_documents('- ' * 500_000 + 'x', 'f')[0]\n"
        "try:\n    _yaml.parse(chunk)\nexcept YamlError:\n    print('refused')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (out.returncode, out.stdout.strip()) == (0, "refused")


# --- free-form depth ---------------------------------------------------------------------------


def shallow(text: str) -> bool:
    (chunk,) = _yaml.split_documents(text, "f.yaml")
    return _yaml.parse(chunk)[1]


def test_shallow_means_no_value_can_be_too_deep() -> None:
    block = "".join(" " * i + f"k{i}:\n" for i in range(14)) + " " * 14 + "leaf: 1\n"
    assert shallow(block)
    assert shallow("a: [[[1]]]\n")
    # 14 columns of block nesting (at most 30 levels) plus 4 brackets could reach 33 levels:
    assert not shallow(block.replace("leaf: 1", "leaf: [[[[1]]]]"))
    assert not shallow(block.replace(" " * 14 + "leaf", " " * 15 + "leaf"))
    assert not shallow("a:\n- - - - - - - - x\n")


def test_too_deep_allows_exactly_the_limit() -> None:
    assert _yaml.too_deep(nested(32)) is None
    assert _yaml.too_deep(nested(33)) == (0,) * 32
    assert _yaml.too_deep({"a": {"b": nested(30)}}) is None
    assert _yaml.too_deep({"a": {"b": nested(31)}}) == ("a", "b", *(0,) * 30)


def test_too_deep_ignores_scalars_and_flat_values() -> None:
    assert _yaml.too_deep(5) is None
    assert _yaml.too_deep({"a": 1, "b": "x"}) is None
    assert _yaml.too_deep({"a": [1, {"x": 1}]}, limit=2) == ("a", 1)


# --- locating ----------------------------------------------------------------------------------

LOCATED = """\
a: 1
---
kind: Thing
spec:
  items:
    - name: one
    - name: two
      size: 3
  missing: {}
"""


@pytest.fixture
def locator() -> _yaml.Locator:
    chunk = _yaml.split_documents(LOCATED, "f.yaml")[1]
    return _yaml.Locator(chunk)


def test_locate_points_at_keys_and_items(locator: _yaml.Locator) -> None:
    assert locator.locate(("kind",)) == (3, 1)
    assert locator.locate(("spec", "items", 1)) == (7, 7)
    assert locator.locate(("spec", "items", 1, "size")) == (8, 7)


def test_locate_missing_key_points_at_the_parent(locator: _yaml.Locator) -> None:
    assert locator.locate(("spec", "missing", "name")) == (9, 3)
    assert locator.locate(("spec", "items", 5)) == (5, 3)
    assert locator.locate(("nothing",)) == (3, 1)
