"""The one gate every input passes before validation: YAML files, CR bodies, devices.yaml from a ConfigMap.

Pydantic checks *what* a document says; this module makes sure it can be checked at all, and turns every
way it cannot into a :class:`~xw_operator.errors.XwError` of the caller's class (``ManifestError`` for
ModelInstances, ``ConfigError`` for devices.yaml) that names the file or object, the field path and the
fix. Documented limits (README, "Input limits"):

- at most :data:`MAX_DOCUMENT_BYTES` bytes of text (a ConfigMap's own limit; etcd refuses larger objects);
- UTF-8 only (the position of the first bad byte is named);
- at most :data:`MAX_DEPTH` levels of nesting (the deepest valid ModelInstance path is 12 levels; Python's
  recursion, ``copy.deepcopy`` and pydantic all fail somewhere between 300 and 1,000);
- at most :data:`MAX_NODES` values after YAML aliases are expanded, so an alias bomb ("billion laughs")
  is refused instead of being walked for hours;
- no duplicate keys at any depth: YAML lets the last one win silently, which let a second
  ``privileged: true`` flip a chip profile to privileged without a word;
- mapping keys are strings, values are JSON types (no YAML dates, sets or binary): the same documents
  must mean the same thing through ``kubectl apply``, whose JSON has nothing else.

:func:`check_tree` applies the structural limits to an already-built Python object (a CR body from the API
server, which accepts 10,000 levels), so the file path and the cluster path refuse the same things.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node

from xw_operator.errors import XwError

MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 100_000
_MAX_SHOWN = 60  # characters of a user's value quoted in a message

_ALLOWED = (str, bool, int, float, type(None), list, tuple)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def path_text(path: Sequence[int | str]) -> str:
    """``spec.affinity.nodeAffinity[0]`` from keys and indices: the one path form of every bad-input message,
    for the structural checks here and for pydantic error locations (validation.describe)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


class _LimitError(yaml.YAMLError):
    """Raised from inside the loader; carries a position like PyYAML's own errors."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class CheckedLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and deep nesting while it composes (before any recursion
    limit of its own is reached)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH + 1:  # +1: the document root is level 0
                raise _LimitError(
                    f"nested deeper than {MAX_DEPTH} levels (the documented limit)",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                raise ConstructorError(
                    "while constructing a mapping", node.start_mark, "found an unhashable key", key_node.start_mark
                ) from None
            if first is not None:
                raise _LimitError(
                    f"duplicate key {_short(key)} (first set on line {first}); remove one of them",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return SafeConstructor.construct_mapping(self, node, deep=deep)


def decode(data: bytes, source: str, error: type[XwError]) -> str:
    """UTF-8 text of a file's bytes, or ``error`` naming the source and the first bad byte."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise error(f"{source}: {len(data)} bytes is larger than the limit of {MAX_DOCUMENT_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(f"{source}: line {line} (byte {exc.start}) is not UTF-8; save the file as UTF-8") from None


def load_yaml_documents(
    text: str, source: str, error: type[XwError], loader_class: type[CheckedLoader] = CheckedLoader
) -> list[Any]:
    """Every document of a YAML text, each checked with :func:`check_tree`; ``error`` for anything wrong."""
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise error(f"{source}: larger than the limit of {MAX_DOCUMENT_BYTES} bytes")
    loader = loader_class(text)
    docs: list[Any] = []
    try:
        while loader.check_data():  # type: ignore[no-untyped-call]
            docs.append(loader.get_data())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{source}:{where} is not valid YAML: {' '.join(str(problem).split())}") from None
    except (ValueError, OverflowError, TypeError, RecursionError, MemoryError) as exc:
        # PyYAML's constructors raise plain Python errors for some scalars (a 5,000-digit integer, a
        # timestamp such as 2024-13-45); they are still bad input.
        raise error(f"{source}: is not valid YAML: {type(exc).__name__}: {_short(str(exc))}") from None
    finally:
        loader.dispose()
    for number, doc in enumerate(docs, start=1):
        where = source if len(docs) == 1 else f"{source} (document {number})"
        check_tree(doc, where, error)
    return docs


def load_yaml(text: str, source: str, error: type[XwError], loader_class: type[CheckedLoader] = CheckedLoader) -> Any:
    """The single document of a YAML text (None when empty); more than one document is an error."""
    docs = load_yaml_documents(text, source, error, loader_class)
    if len(docs) > 1:
        raise error(f"{source}: expected one YAML document, found {len(docs)} (remove the extra '---')")
    return docs[0] if docs else None


def _walk(root: Any) -> Iterator[tuple[Any, tuple[int | str, ...]]]:
    """Every value with its path, depth-first, without recursion (so depth cannot crash the walk)."""
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(root, ())]
    while stack:
        value, path = stack.pop()
        yield value, path
        if isinstance(value, Mapping):  # kopf hands over mapping views as well as dicts
            stack.extend((v, (*path, k)) for k, v in reversed(list(value.items())))
        elif isinstance(value, list | tuple):
            stack.extend((v, (*path, i)) for i, v in reversed(list(enumerate(value))))


def check_tree(data: Any, source: str, error: type[XwError]) -> None:
    """Refuse what no schema should have to see: too deep, too many values, non-string keys, non-JSON values."""
    for count, (value, path) in enumerate(_walk(data), start=1):
        if count > MAX_NODES:
            raise error(
                f"{source}: more than {MAX_NODES} values (YAML aliases expanded); the documented limit "
                "stops alias bombs"
            )
        if len(path) > MAX_DEPTH:
            raise error(
                f"{source}: {path_text(path[:6])}...: nested deeper than {MAX_DEPTH} levels (the documented limit)"
            )
        if isinstance(value, Mapping):
            for key in value:
                if not isinstance(key, str):
                    raise error(f"{source}: {path_text(path)}: key {_short(key)} must be a string (quote it in YAML)")
        elif isinstance(value, datetime.date | datetime.datetime):
            raise error(
                f"{source}: {path_text(path)}: {value.isoformat()} was read as a date; quote it to make it a string"
            )
        elif not isinstance(value, _ALLOWED):
            raise error(
                f"{source}: {path_text(path)}: a value of type {type(value).__name__} is not allowed; "
                "use a string, number, boolean, list or mapping"
            )
