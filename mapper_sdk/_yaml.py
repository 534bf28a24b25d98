"""Safe, fast YAML reading for CRD files: documents, safety limits and error positions.

This module owns everything about YAML text and nothing about KubeEdge kinds:

- splitting a stream into documents ourselves (``---`` / ``...`` lines), so each document keeps
  its first line number and a broken document does not hide the ones after it;
- the fast parse with the Rust parser ``yaml_rs`` (YAML 1.2 core schema: ``yes``/``on`` stay
  strings), with aliases refused outright and duplicate keys refused;
- safety rules the fast parser does not enforce: no tags at all (``!!python/object/new`` and
  friends), and a nesting guard that runs before it (``yaml_rs`` recurses without a limit on
  block sequences such as ``- - - - x`` and crashes the process at a few ten thousand levels);
- the slow path, used only when something is wrong: PyYAML composes the one document to turn a
  path such as ``("spec", "properties", 2)`` into a line and column.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
import yaml_rs

from mapper_sdk.errors import Problem, YamlError

Path = tuple[str | int, ...]

MAX_FREE_FORM_DEPTH = 32
"""How deep a free-form value (``configData``, unknown fields) may nest."""

MAX_DOCUMENT_DEPTH = 64
"""Block nesting refused before parsing (a valid CRD object nests less than 40 levels)."""

# libyaml's iterative parser for the slow path: it never recurses, so hostile depth is harmless.
_PyLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_ALIASES_REFUSED = yaml_rs.AliasLimits(max_total_replayed_events=0)
_ERROR_POSITION = re.compile(r"line (\d+), column (\d+)")
_MARKER_HINT = re.compile(r"\n(?:---|\.\.\.)")  # one pass, twice as fast as two `in` tests
_MARKER = re.compile(r"^(?:---|\.\.\.)(?=[ \t\r\n]|\Z)", re.MULTILINE)
# A tag token can only start at a line start, after whitespace or after a flow indicator.
_TAG_HINT = re.compile(r"(?:^|[\s\[\]{},])!", re.MULTILINE)
_CONTENT = re.compile(r"^[ \t]*[^\s#%]", re.MULTILINE)  # a line that is not blank, comment or %


class _LongPrefix:
    """Finds a line whose prefix of spaces and block indicators is at least ``columns`` long.

    How deep YAML nests can be bounded from the text alone. A block collection can only start
    after such a prefix (indentation, and compact ``- ``/``? ``/``: `` indicators), and one
    that starts at column ``c`` is at most ``2c + 2`` levels deep: each column allows a
    mapping and, at the same column, a sequence. Flow collections add at most one level per
    bracket. So when no line has a prefix of ``P`` columns, block nesting is at most ``2P``.
    """

    def __init__(self, columns: int) -> None:
        # "\n" + prefix rather than "^" in MULTILINE mode: five times faster, as the regex
        # engine can skip from newline to newline; the first line is matched on its own.
        self._first = re.compile(rf"[ \t?:-]{{{columns}}}")
        self._later = re.compile(rf"\n[ \t?:-]{{{columns}}}")

    def __call__(self, text: str) -> bool:
        return bool(self._first.match(text) or self._later.search(text))


# Documents with a longer prefix get an exact depth check before yaml_rs sees them (its own
# limit only covers flow collections; block ones crash it at a few ten thousand levels).
_MAY_BE_TOO_DEEP = _LongPrefix(MAX_DOCUMENT_DEPTH // 2)
# Documents without a longer prefix, and with few brackets, cannot hold a free-form value
# deeper than MAX_FREE_FORM_DEPTH: a free-form value is at least at level 2 of its document.
_SHALLOW_COLUMNS = 15
_SHALLOW_BRACKETS = MAX_FREE_FORM_DEPTH + 1 - 2 * _SHALLOW_COLUMNS
_MAY_NEST = _LongPrefix(_SHALLOW_COLUMNS)


@dataclass(frozen=True, slots=True)
class Chunk:
    """The text of one YAML document and where it sits in its file."""

    file: str
    text: str
    first_line: int  # 1-based line of ``text``'s first line in the file
    index: int  # 0-based position of the document in the file

    def problem(self, message: str, line: int | None = None, column: int | None = None) -> Problem:
        """A problem at ``line``/``column`` *of this chunk* (1-based), or at its start."""
        if line is None:
            return Problem(message, self.file, self.first_line)
        return Problem(message, self.file, self.first_line + line - 1, column)

    def problem_at(self, message: str, mark: Any) -> Problem:
        """A problem at a PyYAML mark (0-based, relative to this chunk) or at the chunk start."""
        if mark is None:
            return self.problem(message)
        return self.problem(message, mark.line + 1, mark.column + 1)


def split_documents(text: str, file: str) -> list[Chunk]:
    """Split a YAML stream into one chunk per document, without parsing it."""
    if not (text.startswith(("---", "...")) or _MARKER_HINT.search(text)):
        return [Chunk(file, text, 1, 0)]  # the common single-document file
    bounds = [0]
    for match in _MARKER.finditer(text):
        if match.group() == "---":
            bounds.append(match.start())
        else:  # "..." ends the document; what follows belongs to the next one
            end = text.find("\n", match.end())
            bounds.append(len(text) if end < 0 else end + 1)
    bounds.append(len(text))
    return _chunks(text, file, bounds)


def _chunks(text: str, file: str, bounds: list[int]) -> list[Chunk]:
    chunks: list[Chunk] = []
    pending = -1  # start of comment/directive lines waiting to join the next document
    for start, end in itertools.pairwise(bounds):
        if start == end:
            continue
        if pending < 0:
            pending = start
        if _is_blank(text[start:end]) and end < len(text):
            continue  # comments and %directives belong to the document that follows
        line = text.count("\n", 0, pending) + 1
        chunks.append(Chunk(file, text[pending:end], line, len(chunks)))
        pending = -1
    return chunks


def _is_blank(text: str) -> bool:
    return _CONTENT.search(text) is None


def parse(chunk: Chunk) -> tuple[Any, bool]:
    """Parse one document safely: ``(value, shallow)``; ``YamlError`` when it is refused.

    ``shallow`` is true when the text proves that no value in it nests deeper than
    ``MAX_FREE_FORM_DEPTH``, so callers can skip ``too_deep`` checks (the common case).
    """
    text = chunk.text
    if "!" in text:
        _refuse_tags(chunk)
    indented = _MAY_NEST(text)
    if indented and _MAY_BE_TOO_DEEP(text):
        _refuse_depth(chunk)
    try:
        value = yaml_rs.loads(
            text,
            parse_datetime=False,
            alias_limits=_ALIASES_REFUSED,
            duplicate_key_policy=yaml_rs.DuplicateKeyPolicy.Error,
        )
    except yaml_rs.YAMLDecodeError as exc:
        raise YamlError([_explain(chunk, str(exc))]) from None
    shallow = not indented and text.count("[") + text.count("{") <= _SHALLOW_BRACKETS
    return value, shallow


def _refuse_tags(chunk: Chunk) -> None:
    hint = _TAG_HINT.search(chunk.text)
    if hint is None:
        return
    found = None
    try:
        found = next(
            (t for t in yaml.scan(chunk.text, Loader=_PyLoader) if isinstance(t, yaml.TagToken)),
            None,
        )
    except yaml.YAMLError:
        # PyYAML cannot tokenise something yaml_rs might accept: refuse rather than guess.
        bang = hint.end() - 1
        line = chunk.text.count("\n", 0, bang) + 1
        column = bang - chunk.text.rfind("\n", 0, bang)
        raise YamlError([chunk.problem(_TAGS_REFUSED.format("!"), line, column)]) from None
    if found is not None:
        handle, suffix = found.value
        tag = (handle or "") + suffix
        raise YamlError([chunk.problem_at(_TAGS_REFUSED.format(tag), found.start_mark)])


_TAGS_REFUSED = "YAML tags are not allowed (found {}); remove the tag and write a plain value"


def _refuse_depth(chunk: Chunk) -> None:
    depth = 0
    try:
        for event in yaml.parse(chunk.text, Loader=_PyLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DOCUMENT_DEPTH:
                    message = f"YAML nesting is deeper than {MAX_DOCUMENT_DEPTH} levels"
                    raise YamlError([chunk.problem_at(message, event.start_mark)])
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        message = f"YAML syntax error: {exc.problem}"
        raise YamlError([chunk.problem_at(message, exc.problem_mark)]) from None


def _explain(chunk: Chunk, message: str) -> Problem:
    """Turn a yaml_rs error message into a located, short problem."""
    lines = message.strip().splitlines()
    reason = lines[-1].strip() if lines else "unknown error"
    if reason.startswith("alias replay limit"):
        return _alias_problem(chunk)
    if reason.startswith("duplicate mapping key"):
        return _duplicate_key_problem(chunk, reason)
    if reason == "recursion limit exceeded":
        reason = "YAML nesting is too deep"
    else:
        reason = f"YAML syntax error: {reason}"
    position = _ERROR_POSITION.search(message)
    if position is None:
        return chunk.problem(reason)
    return chunk.problem(reason, int(position.group(1)), int(position.group(2)))


def _alias_problem(chunk: Chunk) -> Problem:
    try:
        for event in yaml.parse(chunk.text, Loader=_PyLoader):
            if isinstance(event, yaml.AliasEvent):
                message = f"YAML aliases are not allowed (*{event.anchor}); write the value out"
                return chunk.problem_at(message, event.start_mark)
    except yaml.YAMLError:
        pass
    return chunk.problem("YAML aliases are not allowed; write the value out")


def _duplicate_key_problem(chunk: Chunk, reason: str) -> Problem:
    root = _compose(chunk.text)
    if root is not None:
        for key, first in _duplicate_keys(root):
            line = chunk.first_line + first.start_mark.line
            message = f"duplicate key {key.value!r} (first set on line {line})"
            return chunk.problem_at(message, key.start_mark)
    return chunk.problem(reason)


def _duplicate_keys(root: yaml.Node) -> Iterator[tuple[yaml.ScalarNode, yaml.ScalarNode]]:
    """Yield ``(second, first)`` key nodes of every key written twice in one mapping."""
    stack = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, yaml.ScalarNode] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        yield key, keys[key.value]
                    keys.setdefault(key.value, key)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))


def _compose(text: str) -> yaml.Node | None:
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=_PyLoader)
    except yaml.YAMLError:
        return None
    return node


def too_deep(value: Any, limit: int = MAX_FREE_FORM_DEPTH) -> Path | None:
    """The path to the first container nested more than ``limit`` levels in ``value``.

    ``value`` itself is level 1 when it is a dict or list; scalars never count.
    """
    kind = type(value)
    if kind is dict:
        children: Any = value.values()
    elif kind is list:
        children = value
    else:
        return None
    # Most free-form values are flat: find that out without a Python-level loop.
    if _CONTAINERS.isdisjoint(map(type, children)):
        return None
    for key, item in value.items() if kind is dict else enumerate(value):
        if type(item) in _CONTAINERS:
            inner = () if limit <= 1 else too_deep(item, limit - 1)
            if inner is not None:
                return (key, *inner)
    return None


_CONTAINERS = frozenset((dict, list))


class Locator:
    """Maps a path inside one document to its line and column, composing it lazily.

    Nothing happens until the first ``locate``: valid documents never pay for PyYAML.
    """

    __slots__ = ("_chunk", "_composed", "_root")

    def __init__(self, chunk: Chunk) -> None:
        self._chunk = chunk
        self._root: yaml.Node | None = None
        self._composed = False

    @property
    def chunk(self) -> Chunk:
        return self._chunk

    def locate(self, path: Path) -> tuple[int, int] | None:
        """1-based ``(line, column)`` in the file of the deepest node of ``path`` that exists.

        A mapping entry is located at its key, a sequence item at the item; when a key is
        missing, the position is that of its parent.
        """
        if not self._composed:
            self._root = _compose(self._chunk.text)
            self._composed = True
        if self._root is None:
            return None
        mark = _walk(self._root, path).start_mark
        return self._chunk.first_line + mark.line, mark.column + 1


def _walk(root: yaml.Node, path: Path) -> yaml.Node:
    """The node to point at for ``path``: the key of a mapping entry, or the item itself."""
    node = root
    anchor = root  # what to point at if the walk stops here
    for step in path:
        if isinstance(node, yaml.MappingNode):
            entry = _entry(node, str(step))
            if entry is None:
                break
            anchor, node = entry
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if not 0 <= step < len(node.value):
                break
            node = anchor = node.value[step]
        else:
            break
    return anchor


def _entry(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None
