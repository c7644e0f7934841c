"""One strict reader of config mappings: a dataclass built from a mapping (a YAML/JSON section), every default taken
from the dataclass's own fields (written once, there), every complaint a `ConfigError` naming the source (the file),
the field (`arms[0].baudrate`) and the fix.

    @dataclass(frozen=True)
    class RatesConfig:
        control_hz: float = setting(100.0, minimum=1.0, maximum=1000.0)
        blend: str = setting("crossfade", choices=("crossfade", "none"))

    rates = build(RatesConfig, data.get("rates"), source="robot.yaml", where="rates")

What `build` does, in order:
- refuses a key the dataclass has no field for, naming it, a close known name (did you mean) and the known names;
- a missing (or null) key takes the field's default; a field without a default is required (`is missing; e.g. ...;
  `section` needs ...`);
- names list elements by index (`slots[1].x`);
- checks and converts each value by the field's type annotation: bool, int, float (ints accepted, finite only), str
  (a YAML boolean gets the quoting hint), dict, list / tuple (elements checked, a list becomes a tuple),
  `Optional[X]`, `X | Y`, and a nested dataclass (read with the same rules, its section named `where.key`);
- applies the field's `setting(...)` constraints: choices, minimum / maximum (each element of a sequence too),
  `path` (relative to `base`, `~` expanded; a value starting with `@` names a built-in and is kept),
  `number_as_text` (YAML reads 123456789 as a number: turn it back into the text it was), `rest` (the one field
  that collects the keys no other field names);
- builds the dataclass; its `__post_init__` keeps the class's own checks (ranges between fields, ...). A
  `FieldError` raised there names its field and is reported as `source: field `where.name` ...`.

A config class that subclasses `StrictConfig` gets `from_dict(d, source, where)` (this reader) and `to_dict()`.
Torch-free and free of any package above the core: the drivers read their configs with it too."""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Optional

from .errors import ConfigError

_META = "imagewam_strict"


class FieldError(ConfigError):
    """A check of one field failed in a config dataclass's `__post_init__` (`raise FieldError(self, "ids", "must be
    ...")`); `build` reports it with the file and the full field name, a direct construction as `Class.field ...`."""

    def __init__(self, obj_or_name: Any, field: str, detail: str):
        owner = obj_or_name if isinstance(obj_or_name, str) else type(obj_or_name).__name__
        super().__init__(f"{owner}.{field} {detail}")
        self.field, self.detail = field, detail


class StrictConfig:
    """Mixin of a config dataclass: `from_dict(d, source, where)` reads it with `build`, `to_dict()` writes it."""

    @classmethod
    def from_dict(cls, d: Any, source: str = "", where: str = ""):
        return build(cls, d, source or cls.__name__, where)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, choices=None,
            minimum: Optional[float] = None, maximum: Optional[float] = None, example: str = "", path: bool = False,
            number_as_text: bool = False, rest: bool = False) -> Any:
    """A dataclass field with the constraints `build` applies (see the module docstring)."""
    meta = {_META: {"choices": tuple(choices) if choices is not None else None, "minimum": minimum,
                    "maximum": maximum, "example": example, "path": path, "number_as_text": number_as_text,
                    "rest": rest}}
    if rest and default is dataclasses.MISSING and default_factory is dataclasses.MISSING:
        default_factory = dict
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


_NO_RULES = {"choices": None, "minimum": None, "maximum": None, "example": "", "path": False,
             "number_as_text": False, "rest": False}


def known_fields(cls) -> list[str]:
    """The keys a mapping for `cls` may hold (the `rest` field collects, it is no key of its own)."""
    return [f.name for f in dataclasses.fields(cls) if f.init and not _rules(f)["rest"]]


def build(cls, data: Any, source: str, where: str = "", base: Optional[Path] = None):
    """`cls` built from the mapping `data` (None: an empty section, every default). `source`: the file (or what the
    mapping is, e.g. "RealSense config"); `where`: the section's path in it (`arms[0].safety`, "" at the top);
    `base`: the directory relative `path` fields resolve against (None: kept as written)."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"build() needs a dataclass, got {cls!r}")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        what = f"`{where}`" if where else "it"
        raise ConfigError(f"{source}: {what} must be a mapping (key: value lines), got {type(data).__name__} "
                          f"{data!r}")
    reader = _Reader(source, where, base)
    hints = _hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    rest = next((f for f in fields if _rules(f)["rest"]), None)
    names = {f.name for f in fields if f is not rest}
    unknown = [k for k in data if k not in names]
    if unknown and rest is None:
        raise reader.unknown(unknown, sorted(names))
    kwargs: dict[str, Any] = {}
    for f in fields:
        rules = _rules(f)
        if f is rest:
            kwargs[f.name] = {k: data[k] for k in unknown}
            continue
        value = data.get(f.name)
        if value is None:
            optional = _allows_none(hints[f.name])
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if f.name in data and optional:
                    kwargs[f.name] = None
                    continue
                raise reader.missing(f.name, rules["example"], cls)
            if f.name in data and optional:  # an explicit null on an optional field: None, not the default
                kwargs[f.name] = None
            continue  # the dataclass's default
        kwargs[f.name] = reader.value(f.name, value, hints[f.name], rules)
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise ConfigError(f"{source}: field `{reader.name(exc.field)}` {exc.detail}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {f'`{where}`: ' if where else ''}{exc}") from None


def _rules(f: dataclasses.Field) -> dict:
    return f.metadata.get(_META, _NO_RULES)


_HINTS: dict = {}


def _hints(cls) -> dict:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _allows_none(tp) -> bool:
    return tp is Any or tp is object or (_is_union(tp) and type(None) in typing.get_args(tp))


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


class _Mismatch(Exception):
    """A value is not of the field's type (turned into a ConfigError naming the field)."""


def _type_name(tp) -> str:
    if _is_union(tp):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (tuple, list) or tp in (tuple, list):
        inner = [a for a in args if a is not Ellipsis]
        if inner and dataclasses.is_dataclass(inner[0]):
            return f"a list of mappings ({inner[0].__name__} fields)"
        return "a list" + (f" of {_type_name(inner[0])}" if inner else "")
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__} fields)"
    return getattr(tp, "__name__", str(tp))


class _Reader:
    def __init__(self, source: str, where: str, base: Optional[Path]):
        self.source, self.where, self.base = source, where, base

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: field `{self.name(key)}` {msg}")

    def missing(self, key: str, example: str, cls) -> ConfigError:
        fields = [f for f in dataclasses.fields(cls) if f.init and not _rules(f)["rest"]]
        need = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        optional = [f.name for f in fields if f.name not in need]
        section = f"`{self.where}`" if self.where else "the top level"
        return self.err(key, "is missing" + (f"; e.g. `{self.name(key)}: {example}`" if example else "")
                        + f"; {section} needs {', '.join(need)}" + (f" (optional: {', '.join(optional)})"
                                                                      if optional else ""))

    def unknown(self, keys: list, known: list) -> ConfigError:
        parts = []
        for k in keys:
            close = difflib.get_close_matches(str(k), known, n=1, cutoff=0.6)
            parts.append(f"`{self.name(k)}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
        return ConfigError(f"{self.source}: unknown field{'s' if len(parts) > 1 else ''} {', '.join(parts)}; known "
                           f"{'in `' + self.where + '`' if self.where else 'here'}: {', '.join(known)}; check the "
                           "spelling")

    def value(self, key: str, v: Any, tp, rules: dict) -> Any:
        try:
            v = self.convert(key, v, tp, rules)
        except _Mismatch:
            example = f" (e.g. {rules['example']})" if rules["example"] else ""
            if isinstance(v, bool) and _accepts(tp, str):
                raise self.err(key, f"must be a string, got the boolean {v!r}: YAML reads unquoted on/off/yes/no "
                                    f"as booleans, so quote it (e.g. {key}: \"off\")") from None
            raise self.err(key, f"must be {_type_name(tp)}, got {v!r}{example}") from None
        if rules["choices"] is not None and v not in rules["choices"]:
            raise self.err(key, f"must be one of {list(rules['choices'])}, got {v!r}")
        for x in (v if isinstance(v, tuple) else (v,)):
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                if rules["minimum"] is not None and x < rules["minimum"]:
                    raise self.err(key, f"must be >= {rules['minimum']}, got {v!r}")
                if rules["maximum"] is not None and x > rules["maximum"]:
                    raise self.err(key, f"must be <= {rules['maximum']}, got {v!r}")
        if rules["path"] and isinstance(v, str) and not v.startswith("@"):
            p = Path(v).expanduser()
            v = str(p if p.is_absolute() or self.base is None else Path(self.base) / p)
        return v

    def convert(self, key: str, v: Any, tp, rules: dict) -> Any:
        if tp is Any or tp is object:
            return v
        if _is_union(tp):
            for option in typing.get_args(tp):
                if option is type(None):
                    continue
                try:
                    return self.convert(key, v, option, rules)
                except _Mismatch:
                    continue
            raise _Mismatch
        if dataclasses.is_dataclass(tp):
            if not isinstance(v, Mapping):
                raise _Mismatch
            return build(tp, v, self.source, self.name(key), self.base)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is bool:
            if not isinstance(v, bool):
                raise _Mismatch
            return v
        if tp is int:
            if not isinstance(v, int) or isinstance(v, bool):
                raise _Mismatch
            return v
        if tp is float:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise _Mismatch
            if not math.isfinite(v):
                raise self.err(key, f"must be finite, got {v!r}")
            return float(v)
        if tp is str:
            if isinstance(v, str):
                return v
            if rules["number_as_text"] and isinstance(v, (int, float)) and not isinstance(v, bool):
                return str(v)
            raise _Mismatch
        if tp is dict or origin is dict:
            if not isinstance(v, Mapping):
                raise _Mismatch
            return dict(v)
        if tp in (tuple, list) or origin in (tuple, list):
            if not isinstance(v, (list, tuple)):
                raise _Mismatch
            inner = [a for a in args if a is not Ellipsis]
            items = [self.convert(f"{key}[{i}]", x, inner[0], _NO_RULES) for i, x in enumerate(v)] if inner else list(v)
            return tuple(items) if (tp is tuple or origin is tuple) else items
        if isinstance(tp, type):
            if not isinstance(v, tp):
                raise _Mismatch
            return v
        return v


def _accepts(tp, kind) -> bool:
    return tp is kind or (_is_union(tp) and kind in typing.get_args(tp))
