"""Reading the files a user writes: UTF-8 text under a size cap, safe YAML with the line and
column of every value, and JSON-or-YAML documents. Every problem is a located `Problem`.
The one home of PyYAML (manifests, data files, schemas and simulator profiles all read here).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import NoneType
from typing import Any

import yaml

from launcher.errors import ManifestError, Problem
from launcher.errors import dotted_path as dotted_path  # its home is errors; re-exported

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_DATA_BYTES = 64 * 1024 * 1024
MAX_YAML_NODES = 2_000_000  # values in one document, aliases expanded
MAX_ALIAS_EXPANSION = 100_000  # values that aliases may add beyond what is written
MAX_DEPTH = 64

Loc = tuple[str | int, ...]


@dataclass
class Marks:
    """Where each value (and each mapping key) of a YAML document starts: path -> (line, col)."""

    file: str
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    block: set[Loc] = field(default_factory=set)  # `|` and `>` scalars: text starts a line below

    def find(self, loc: Loc, *, key: bool = False) -> tuple[int | None, int | None]:
        """The mark of `loc`, or of its nearest ancestor that has one."""
        if key and loc in self.keys:
            return self.keys[loc]
        for end in range(len(loc), -1, -1):
            mark = self.values.get(loc[:end])
            if mark:
                return mark
        return None, None


class _Loader(yaml.CSafeLoader):
    """Safe loader on libyaml's parser. Dates stay strings (JSON has none), and only true/false
    are booleans (YAML 1.2): `on`, `no`, `yes` stay strings, as keys and as values."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:timestamp", _BOOL)]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise ManifestError(
            [
                Problem(
                    file,
                    line,
                    col,
                    "",
                    f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
                    "save the file as UTF-8",
                )
            ]
        ) from None


def read_text(path: Path, *, limit: int, label: str | None = None) -> str:
    """Read a UTF-8 text file the manifest refers to, with a size cap and located errors."""
    name = label or str(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise ManifestError(
                [
                    Problem(
                        name,
                        None,
                        None,
                        "",
                        f"file is {size:,} bytes; the limit is {limit:,}",
                        "split it into smaller files",
                    )
                ]
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError([Problem(name, None, None, "", "file not found")]) from None
    except IsADirectoryError:
        raise ManifestError([Problem(name, None, None, "", "is a directory, not a file")]) from None
    except OSError as exc:
        raise ManifestError([Problem(name, None, None, "", f"cannot read: {exc.strerror}")]) from None
    return _decode(raw, name)


def _at(file: str, mark: yaml.Mark | None, field: str, message: str, hint: str | None = None) -> Problem:
    line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
    return Problem(file, line, col, field, message, hint)


def _expansion(root: yaml.Node, file: str) -> None:
    """Refuse recursive aliases and documents whose aliases expand past the limits.

    Counted on the node graph (shared nodes once), before anything is built, so an alias bomb
    costs a few milliseconds instead of all the memory.
    """
    sizes: dict[int, int] = {}
    uses: dict[int, int] = {}
    active: set[int] = set()
    nodes: dict[int, yaml.Node] = {}

    def size(n: yaml.Node) -> int:
        k = id(n)
        if k in sizes:
            uses[k] += 1
            return sizes[k]
        if k in active:
            raise ManifestError(
                [
                    _at(
                        file,
                        n.start_mark,
                        "",
                        "recursive alias: a value contains itself",
                        "remove the alias",
                    )
                ]
            )
        active.add(k)
        children: list[yaml.Node] = []
        if isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        elif isinstance(n, yaml.SequenceNode):
            children = list(n.value)
        total = 1 + sum(size(c) for c in children)
        active.discard(k)
        sizes[k], uses[k], nodes[k] = total, 1, n
        return total

    expanded = size(root)
    extra = expanded - len(sizes)
    if expanded > MAX_YAML_NODES or extra > MAX_ALIAS_EXPANSION:
        worst = max(sizes, key=lambda k: (uses[k] - 1) * sizes[k])
        raise ManifestError(
            [
                _at(
                    file,
                    nodes[worst].start_mark,
                    "",
                    f"aliases expand the document to {expanded:,} values (an alias "
                    f"bomb?); the limit is {MAX_ALIAS_EXPANSION:,} values more than "
                    "written",
                    "write the values out, or use fewer nested aliases",
                )
            ]
        )


def parse_yaml(text: str, file: str) -> tuple[Any, Marks]:
    """Parse one YAML document into plain data plus the marks of every value.

    Refuses duplicate mapping keys, unknown tags, nesting deeper than MAX_DEPTH, and aliases
    that expand too far (alias bombs). Timestamps stay strings.
    """
    marks = Marks(file)
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.reader.ReaderError as exc:  # libyaml counts the position in UTF-8 bytes
            pos = len(text.encode()[: exc.position].decode(errors="ignore"))
            line = text.count("\n", 0, pos) + 1
            col = pos - (text.rfind("\n", 0, pos) + 1) + 1
            raise ManifestError(
                [
                    Problem(
                        file,
                        line,
                        col,
                        "",
                        f"control character #x{exc.character:04x} is not allowed in YAML",
                        "remove it",
                    )
                ]
            ) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = (
                f"{exc.context}, {exc.problem}"
                if exc.context and exc.problem
                else (exc.problem or exc.context)
            )
            raise ManifestError([_at(file, mark, "", f"YAML syntax error: {problem}")]) from None
        except yaml.YAMLError as exc:
            raise ManifestError([Problem(file, None, None, "", f"YAML error: {exc}")]) from None
        if node is None:
            return None, marks
        _expansion(node, file)
        problems: list[Problem] = []
        data = _Builder(loader, marks, problems).build(node, ())
    except yaml.MarkedYAMLError as exc:  # an unknown tag, a bad merge key
        raise ManifestError(
            [
                _at(
                    file,
                    exc.problem_mark or exc.context_mark,
                    "",
                    f"YAML error: {exc.problem or exc.context}",
                )
            ]
        ) from None
    except RecursionError:
        raise ManifestError(
            [
                Problem(
                    file,
                    None,
                    None,
                    "",
                    f"YAML nested more than {MAX_DEPTH} levels deep",
                    "flatten the document",
                )
            ]
        ) from None
    finally:
        loader.dispose()
    if problems:
        raise ManifestError(problems)
    return data, marks


_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"


class _Builder:
    """Builds plain data from a composed node graph, recording marks and key problems."""

    def __init__(self, loader: _Loader, marks: Marks, problems: list[Problem]) -> None:
        self.loader, self.marks, self.problems = loader, marks, problems

    def build(self, n: yaml.Node, loc: Loc) -> Any:
        file = self.marks.file
        if len(loc) > MAX_DEPTH:
            raise ManifestError(
                [
                    _at(
                        file,
                        n.start_mark,
                        dotted_path(loc[:MAX_DEPTH]),
                        f"nested more than {MAX_DEPTH} levels deep",
                    )
                ]
            )
        self.marks.values.setdefault(loc, (n.start_mark.line + 1, n.start_mark.column + 1))
        if isinstance(n, yaml.ScalarNode):
            if n.style in ("|", ">"):
                self.marks.block.add(loc)
            value = self.loader.construct_object(n)
            if not isinstance(value, str | int | float | NoneType):  # bool is an int
                self.problems.append(
                    _at(
                        file,
                        n.start_mark,
                        dotted_path(loc),
                        f"YAML tag {n.tag!r} gives a value JSON cannot hold",
                        "quote the value",
                    )
                )
            return value
        if n.tag not in (_SEQ, _MAP):  # `!!python/...`, `!!set`, `!foo`: not plain data
            self.problems.append(
                _at(
                    file,
                    n.start_mark,
                    dotted_path(loc),
                    f"unsupported YAML tag {n.tag!r}",
                    "remove the tag",
                )
            )
            return None
        if isinstance(n, yaml.SequenceNode):
            return [self.build(v, (*loc, i)) for i, v in enumerate(n.value)]
        assert isinstance(n, yaml.MappingNode)
        seen: dict[Any, int] = {}
        for k, _ in n.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                kv = self.loader.construct_object(k)
                if kv in seen:
                    self.problems.append(
                        _at(
                            file,
                            k.start_mark,
                            dotted_path((*loc, kv)),
                            f"duplicate key {kv!r} (first on line {seen[kv]})",
                            "remove one of them",
                        )
                    )
                else:
                    seen[kv] = k.start_mark.line + 1
        self.loader.flatten_mapping(n)
        out: dict[Any, Any] = {}
        for k, v in n.value:
            if not isinstance(k, yaml.ScalarNode):
                self.problems.append(
                    _at(file, k.start_mark, dotted_path(loc), "mapping keys must be plain scalars")
                )
                continue
            kv = self.loader.construct_object(k)
            if isinstance(kv, list | dict | set):  # e.g. `!!set` keys: not hashable data
                kv = str(kv)
            self.marks.keys.setdefault((*loc, kv), (k.start_mark.line + 1, k.start_mark.column + 1))
            out[kv] = self.build(v, (*loc, kv))
        return out


def read_yaml(path: Path, *, limit: int = MAX_MANIFEST_BYTES) -> tuple[Any, Marks]:
    """Read and parse a YAML file (manifests, YAML data files, simulator profiles)."""
    return parse_yaml(read_text(path, limit=limit), str(path))


def load_json_or_yaml(path: Path, label: str, limit: int) -> Any:
    """A JSON or YAML document (schemas referenced with `{file: ...}`)."""
    text = read_text(path, limit=limit, label=label)
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(
                [Problem(label, exc.lineno, exc.colno, "", f"invalid JSON: {exc.msg}")]
            ) from None
    return parse_yaml(text, label)[0]
