"""Reading the project's YAML files: one safe loader and one error format for every file the runtime reads.

This module owns how a YAML file becomes validated data: the embodiment files (``calibration/*.yaml``), bundle
manifests, calibrated limit files, the alignment and ladder configs all go through it. It owns three rules:

* Parsing is YAML's safe subset, and a repeated mapping key is refused (at any depth, naming the key path and
  both lines): with a plain loader the second value silently wins, and in a limits file that is a hazard. Merge
  keys (``<<``) are refused for the same reason: a merged value can be overridden without a trace.
* Where a mapping is required at the top level, anything else (a list, a scalar, an empty file) is refused.
* Every problem is reported as one line ``<file>: <key path>: <problem>``. Key paths are dotted, list entries are
  indexed and labelled by their ``name`` (or ``role``): ``arms[0](left).joints[6](left_gripper).position``;
  ``<top level>`` stands for the whole file. A bound violation states the field's full allowed range when the
  model has one, an unknown key suggests the closest known key.

Loaders pass their own exception class (``error=``); the file-only ones derive it from :class:`ConfigFileError`.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = [
    "TOP_LEVEL",
    "ConfigFileError",
    "format_validation_error",
    "load_model",
    "load_yaml",
    "parse_yaml",
    "validate",
]

ModelT = TypeVar("ModelT", bound=BaseModel)
ErrorType = Callable[[str], Exception]
TOP_LEVEL = "<top level>"
LABEL_KEYS = ("name", "role")  # a list entry that is a mapping is labelled by the first of these it has
MERGE_TAG = "tag:yaml.org,2002:merge"
BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
BOUND_SYMBOLS = (("gt", "<"), ("ge", "<="), ("lt", "<"), ("le", "<="))


class ConfigFileError(ValueError):
    """A file cannot be read or is invalid; each line of the message reads ``<file>: <key path>: <problem>``."""


# --- key paths ------------------------------------------------------------------------------------------------


def _step(path: str, item: Any, label: Any = None) -> str:
    """Extend a key path by a mapping key (``.key``) or a list index (``[i]``, with ``(label)`` when known)."""
    if isinstance(item, int) and not isinstance(item, bool):
        return f"{path}[{item}]" + (f"({label})" if label not in (None, "") else "")
    return f"{path}.{item}" if path else str(item)


def _location(loc: tuple[Any, ...], data: Any) -> str:
    """A pydantic location as a key path in the file, with list entries labelled from the parsed data."""
    path, node = "", data
    for item in loc:
        if isinstance(node, list | tuple) and isinstance(item, int) and 0 <= item < len(node):
            node = node[item]
            label = next((node[key] for key in LABEL_KEYS if key in node), None) if isinstance(node, dict) else None
        else:
            node = node.get(item) if isinstance(node, dict) else None
            label = None
        path = _step(path, item, label)
    return path or TOP_LEVEL


# --- parsing --------------------------------------------------------------------------------------------------


def _node_label(node: yaml.Node) -> str | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    scalars = {key.value: value.value for key, value in node.value if isinstance(value, yaml.ScalarNode)}
    return next((scalars[key] for key in LABEL_KEYS if key in scalars), None)


def _repeated_key(loader: yaml.SafeLoader, node: yaml.Node, path: str, seen: set[int]) -> str | None:
    """The first repeated (or merge) key under `node` as ``<key path>: <problem>``, None when there is none."""
    if id(node) in seen:  # an alias: its node was checked where the anchor was
        return None
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        children = [(_step(path, index, _node_label(item)), item) for index, item in enumerate(node.value)]
    elif isinstance(node, yaml.MappingNode):
        first: dict[Any, str] = {}
        children = []
        for key_node, value_node in node.value:
            mark = key_node.start_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}"
            if key_node.tag == MERGE_TAG:
                return f"{_step(path, '<<')}: merge key at {where} refused (write every value where it applies)"
            if not isinstance(key_node, yaml.ScalarNode):  # a collection as a key: the constructor refuses it
                continue
            key = loader.construct_object(key_node)
            if key in first:
                return f"{_step(path, key)}: repeated key {key!r} at {where} (first at {first[key]})"
            first[key] = where
            children.append((_step(path, key), value_node))
    else:
        return None
    for child_path, child in children:
        if (problem := _repeated_key(loader, child, child_path, seen)) is not None:
            return problem
    return None


def parse_yaml(text: str, where: Path | str, *, mapping: bool = True, error: ErrorType = ConfigFileError) -> Any:
    """Parse YAML text (safe subset, repeated keys refused); with `mapping`, refuse a top level that is not one."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        problem = None if node is None else _repeated_key(loader, node, "", set())
        if problem is not None:
            raise error(f"{where}: {problem}")
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as invalid:
        raise error(f"{where}: not valid YAML ({invalid})") from None
    finally:
        loader.dispose()
    if mapping and not isinstance(data, dict):
        found = "an empty file" if data is None else type(data).__name__
        raise error(f"{where}: {TOP_LEVEL}: expected a mapping of keys, got {found}")
    return data


def load_yaml(path: Path | str, *, what: str = "file", mapping: bool = True, error: ErrorType = ConfigFileError) -> Any:
    """Read a UTF-8 YAML file with :func:`parse_yaml`; `what` names the file in a read failure."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as failure:
        reason = getattr(failure, "strerror", None) or failure
        raise error(f"{path}: cannot read {what} ({reason})") from None
    return parse_yaml(text, path, mapping=mapping, error=error)


# --- validation -----------------------------------------------------------------------------------------------


def _inner_model(annotation: Any) -> tuple[type[BaseModel] | None, int]:
    """The model an annotation holds and how many container levels (tuple, list, dict) wrap it."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, 0
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _inner_model(args[0])
    nested = 0 if origin in (typing.Union, types.UnionType) else 1
    for arg in args:
        model, depth = _inner_model(arg)
        if model is not None:
            return model, depth + nested
    return None, 0


def _model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validated the value at `loc` (None when the location leaves the models)."""
    containers = 0
    for item in loc:
        if containers:  # a list index or a dict key: step over it
            containers -= 1
            continue
        field = model.model_fields.get(item) if model is not None and isinstance(item, str) else None
        if field is None:
            return None
        model, containers = _inner_model(field.annotation)
    return None if containers else model


def _allowed_range(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str | None:
    """``low <= value <= high`` for a field bounded on both sides, None otherwise."""
    parent = _model_at(model, loc[:-1]) if loc else None
    field = parent.model_fields.get(loc[-1]) if parent is not None and isinstance(loc[-1], str) else None
    if field is None:
        return None
    bounds = {
        name: getattr(item, name)
        for item in field.metadata
        for name, _ in BOUND_SYMBOLS
        if getattr(item, name, None) is not None
    }
    low = next((f"{bounds[name]} {symbol} " for name, symbol in BOUND_SYMBOLS[:2] if name in bounds), None)
    high = next((f" {symbol} {bounds[name]}" for name, symbol in BOUND_SYMBOLS[2:] if name in bounds), None)
    return f"{low}value{high}" if low and high else None


def _describe(item: dict[str, Any], model: type[BaseModel] | None) -> str:
    kind, loc = item["type"], tuple(item["loc"])
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1]) if loc else None
        known = list(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1) if loc else []
        return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else " (not part of the schema)")
    if kind == "missing":
        return "required key is missing"
    if kind == "finite_number":
        return f"must be a finite number, got {item.get('input')!r}"
    if kind == "value_error":
        return str(item["msg"]).removeprefix("Value error, ")
    given = repr(item.get("input"))
    given = given if len(given) <= 80 else given[:77] + "..."
    allowed = _allowed_range(model, loc) if kind in BOUND_ERRORS else None
    return f"{item['msg']} ({f'allowed: {allowed}; ' if allowed else ''}got {given})"


def format_validation_error(
    where: Path | str, error: ValidationError, data: Any = None, model: type[BaseModel] | None = None
) -> str:
    """One ``<where>: <key path>: <problem>`` line per problem; `data` (the validated input) labels list entries,
    `model` (the validated class) supplies allowed ranges and known keys."""
    problems = []
    for item in error.errors(include_url=False):
        given, min_length = item.get("input"), item.get("ctx", {}).get("min_length")
        if item["type"] == "too_short" and isinstance(given, list | tuple) and len(given) >= (min_length or 0):
            continue  # an echo of errors inside the list's entries, reported on their own
        problems.append(f"{where}: {_location(tuple(item['loc']), data)}: {_describe(item, model)}")
    return "\n".join(problems)


def validate(where: Path | str, model: type[ModelT], data: Any, *, error: ErrorType = ConfigFileError) -> ModelT:
    """`model.model_validate(data)`, every problem raised as `error` in the ``<where>: <key>: <problem>`` format."""
    try:
        return model.model_validate(data)
    except ValidationError as invalid:
        raise error(format_validation_error(where, invalid, data, model)) from None


def load_model(
    path: Path | str,
    model: type[ModelT],
    *,
    what: str = "file",
    error: ErrorType = ConfigFileError,
    overrides: dict[str, Any] | None = None,
) -> ModelT:
    """Read a YAML mapping (see :func:`load_yaml`), apply top-level `overrides`, validate it as `model`."""
    data = load_yaml(path, what=what, error=error)
    return validate(Path(path), model, {**data, **(overrides or {})}, error=error)
