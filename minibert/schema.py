"""Files minibert writes and later reads back (classifier.json, trainer.pt's run state, ...) are
checked against the dataclass they were written from: every key known, every value of the field's
declared type, and the dataclass's own checks. A bad value is one error naming the file, the key and
the value, never a wrong reading ("false" taken as true) or a traceback further on.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing

from minibert.errors import MinibertError


def is_instance(value, annotation) -> bool:
    """Whether a JSON-like value has the declared type: bool is not an int, an int is a float, a
    list[X] or dict[str, X] has elements of that type, X | None allows None."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(is_instance(value, arg) for arg in args)
    if annotation is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(is_instance(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(is_instance(k, args[0]) and is_instance(v, args[1])
                                               for k, v in value.items())
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if dataclasses.is_dataclass(annotation):
        return isinstance(value, (dict, annotation))
    return isinstance(value, annotation)


def typed(cls, values, where: str, error: type[MinibertError]):
    """cls(**values) after checking values against cls's fields; `where` names the file (and the
    part of it) in the error. Fields left out take their defaults (files from older versions)."""
    if not isinstance(values, dict):
        raise error(f"{where}: expected an object, got {json.dumps(values, default=str)[:80]}")
    hints = typing.get_type_hints(cls)
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise error(f"{where}: unknown key {', '.join(map(repr, unknown))}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"{where}: missing key {', '.join(map(repr, missing))}")
    values = dict(values)
    for key, value in values.items():
        if not is_instance(value, hints[key]):
            shown = json.dumps(value, default=str)
            raise error(f"{where}: {key} is {shown[:80]}, expected {describe(hints[key])}")
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):  # a nested dataclass, checked too
            values[key] = typed(hints[key], value, f"{where}: {key}", error)
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise error(f"{where}: {e}") from None


def describe(annotation) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))
