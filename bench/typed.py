"""The typed-config engine: YAML loading, type coercion against annotations, dataclasses from mappings, and the
one-line documentation of every field (for ``tvr-convbench config``).

Every section of a sweep goes through ``from_mapping`` (dataclasses) or ``check_signature`` (constructor
signatures of methods and data modules): an unknown key, a wrong type or a bad value raises ``ConfigError`` with
one line naming the source and the key.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from tvr_convbench.core.errors import ConfigError
from tvr_convbench.core.registry import suggest


# --- YAML ----------------------------------------------------------------------------------------------------
class YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``) and rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN201 - PyYAML signature
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: Path) -> dict:
    """Parse a YAML mapping, with file-named errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    try:
        data = yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())  # ReaderError spans two lines
        raise ConfigError(f"{path}:{where} malformed YAML ({problem})") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


# --- type checking -------------------------------------------------------------------------------------------
def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a type annotation (ints are accepted for floats); return the typed value."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
        item = args[0] if args else Any
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_describe(value)}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return from_mapping(annotation, value, where)
    return _coerce_scalar(value, annotation, where)


def _coerce_union(value: Any, args: tuple, where: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return coerce(value, arg, where)
        except ConfigError as err:
            errors.append(str(err).split(": ", 1)[-1])
    raise ConfigError(f"{where}: {'; '.join(errors)}")


def _coerce_scalar(value: Any, annotation: Any, where: str) -> Any:
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {_describe(value)}")
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {_describe(value)}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {_describe(value)}")
    return value


def _type_name(annotation: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string"}.get(annotation, getattr(annotation, "__name__", "?"))


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, dict | list) else type(value).__name__


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping of overrides (unknown keys and wrong types raise)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}{suggest(str(key), fields)} (valid: {', '.join(fields)})")
    values = {key: coerce(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    missing = [name for name, f in fields.items() if name not in values and _required(f)]
    if missing:
        raise ConfigError(f"{where}: missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def check_signature(params: dict[str, inspect.Parameter], data: dict, where: str, hints: dict) -> dict:
    """Check keyword arguments against a constructor's parameters (the method/dataset config schema)."""
    out = {}
    for key, value in data.items():
        if key not in params:
            raise ConfigError(f"{where}: unknown key {key!r}{suggest(str(key), params)} (valid: {', '.join(params)})")
        out[key] = coerce(value, hints.get(key, Any), f"{where}.{key}")
    return out


# --- documentation ---------------------------------------------------------------------------------------------
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass's fields (the string literal right after a field), as one line."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        docs |= _attribute_docs(tree.body[0].body)
    return docs


def _attribute_docs(body: list[ast.stmt]) -> dict[str, str]:
    docs = {}
    for node, after in zip(body, body[1:]):
        is_doc = isinstance(after, ast.Expr) and isinstance(getattr(after, "value", None), ast.Constant)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and is_doc:
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
ARG_LINE = re.compile(r"^(\s+)(\*{0,2}\w+)(?: \([^)]*\))?:\s*(.*)$")


def argument_docs(cls: type) -> dict[str, str]:
    """One line per constructor argument from the ``Args:`` sections of the class docstrings along the MRO."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        docs |= _args_section(inspect.getdoc(klass) if "__doc__" in vars(klass) else None)
    return docs


def _args_section(doc: str | None) -> dict[str, str]:
    out, inside, indent, current = {}, False, None, None
    for line in (doc or "").splitlines():
        if ARGS_HEADER.match(line):
            inside, indent = True, None
            continue
        if not inside:
            continue
        match = ARG_LINE.match(line)
        if match and (indent is None or len(match.group(1)) == indent):
            indent, current = len(match.group(1)), match.group(2)
            out[current] = match.group(3).strip()
        elif line.strip() and indent is not None and len(line) - len(line.lstrip()) > indent and current:
            out[current] = f"{out[current]} {line.strip()}".strip()
        elif line.strip() and (indent is None or len(line) - len(line.lstrip()) < indent):
            inside = False
    return {k: _first_sentence(v) for k, v in out.items()}


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]
