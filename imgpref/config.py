"""Configs: trees of dataclasses, filled from YAML files and ``--set a.b=value`` overrides.

Every recipe declares its config as nested dataclasses with a docstring per field. This module turns
YAML + dotted overrides into that tree and rejects what does not fit, naming the key, the file and
what is allowed: an unknown key (with the closest allowed one), a value of the wrong type, a value
outside a ``Literal``'s choices. Validation that needs several fields lives in each dataclass's
``__post_init__``; its errors are reported with the section they came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override does not fit the config's dataclasses."""


def require_min(section: str, settings: Any, low: float, *fields: str, strict: bool = False, note: str = "") -> None:
    """Lower bounds of a config section's fields: the first field below ``low`` (or equal to it when
    ``strict``) raises one message naming it and the value given,
    ``"<section>.<field> must be >= <low> (<note>), got <value>"``."""
    for name in fields:
        value = getattr(settings, name)
        if not (value > low if strict else value >= low):
            rule = f"{'>' if strict else '>='} {low:g}" + (f" ({note})" if note else "")
            raise ValueError(f"{section}.{name} must be {rule}, got {value!r}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


#: Words YAML 1.1 reads as True / False (``judge: off`` arrives as False).
YAML_BOOL_WORDS = {True: ("on", "yes", "true", "y"), False: ("off", "no", "false", "n")}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where YAML is loose (1e-4 → float)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key!r} must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in args):
            # YAML 1.1 reads on/off/yes/no as booleans; give a choice spelled that way back its word.
            words = [a for a in args if isinstance(a, str) and a.lower() in YAML_BOOL_WORDS[value]]
            value = words[0] if len(words) == 1 else value
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key!r} must be one of {allowed}; got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key!r} is a section: give it a mapping of keys, got {value!r}")
        return _build(tp, value, key)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{key!r} must be a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key!r} must be a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    where = f"under {prefix!r}" if prefix else "at the top level"
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            full = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown key {full!r}{hint}; allowed keys {where}: {', '.join(fields)}")
    kwargs = {
        name: _coerce(data[name], hints[name], f"{prefix}.{name}" if prefix else name)
        for name in fields
        if name in data
    }
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid {'section ' + repr(prefix) if prefix else 'config'}: {err}") from err


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-4"`` → (["train", "lr"], 1e-4); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key; use section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from err
    return key.split("."), value


def _set_dotted(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(path)!r}: {part!r} is a value, not a section")
        node = child
    node[path[-1]] = value


def build_config(cls: type[T], tree: Mapping[str, Any], prefix: str = "") -> T:
    """Build config ``cls`` from an already-parsed tree (errors name keys under ``prefix``)."""
    return _build(cls, tree, prefix)


def set_dotted(tree: dict, path: list[str], value: Any) -> None:
    """Set ``tree[path[0]][path[1]]... = value``, creating sections on the way."""
    _set_dotted(tree, path, value)


def read_yaml(path: str | Path, *, given_as: str = "--config") -> dict[str, Any]:
    """A YAML mapping from a file, with errors that name the file (and line, for syntax errors);
    ``given_as`` names where the path came from (the flag or config key to fix)."""
    path = Path(path)
    if not path.is_file():
        where = f" (a relative path is read from the current folder, {Path.cwd()})" if not path.is_absolute() else ""
        raise ConfigError(f"config file {str(path)!r} not found{where}; pass an existing YAML file as {given_as}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}")
    return data


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable dotted key of a config class (sections expanded), e.g. ``optim.lr``."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        if f.init:
            tp = hints[f.name]
            nested = isinstance(tp, type) and dataclasses.is_dataclass(tp)
            keys += leaf_keys(tp, f"{prefix}{f.name}.") if nested else [f"{prefix}{f.name}"]
    return keys


def check_override_key(cls: type, path: list[str], text: str, prefix: str = "") -> None:
    """Refuse a ``--set`` key that names no field, suggesting the closest key of any section.

    A mapping field whose metadata names a ``schema`` dataclass (a sweep's ``base``) is checked against it."""
    node: Any = cls
    for depth, part in enumerate(path):
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            return  # inside a value (a mapping or list): checked when the config is built
        fields = {f.name: f for f in dataclasses.fields(node) if f.init}
        if part not in fields:
            dotted, by_name = prefix + ".".join(path), {}
            for key in leaf_keys(cls, prefix):
                by_name.setdefault(key.rsplit(".", 1)[-1], []).append(key)
            name = difflib.get_close_matches(path[-1], list(by_name), n=1, cutoff=0.6)
            options = by_name[name[0]] if name else []
            same_section = [k for k in options if k.rsplit(".", 1)[0] == dotted.rsplit(".", 1)[0]]
            hint = f" (did you mean {(same_section or options)[0]!r}?)" if options else ""
            section = (prefix + ".".join(path[:depth])).rstrip(".")
            under = f"under {section!r}" if section else "at the top level"
            raise ConfigError(
                f"--set {text!r}: unknown key {dotted!r}{hint}; allowed keys {under}: {', '.join(fields)}"
            )
        schema = fields[part].metadata.get("schema")
        if schema is not None:
            return check_override_key(schema, path[depth + 1 :], text, f"{prefix}{'.'.join(path[: depth + 1])}.")
        node = typing.get_type_hints(node)[part]


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build config ``cls`` from an optional YAML file and dotted overrides (later ones win)."""
    data = read_yaml(path) if path is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        check_override_key(cls, key, text)
        _set_dotted(data, key, value)
    try:
        return _build(cls, data)
    except ConfigError as err:
        source = f"config {str(path)!r}" if path is not None else "config"
        raise ConfigError(f"{source}: {err}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML-able data (paths as strings, tuples as lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(config)


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (it reloads with :func:`load_config`)."""
    path = Path(path)
    path.write_text(config_yaml(config))
    return path


def config_yaml(config: Any) -> str:
    """The resolved config as YAML text: every key, defaults included."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that keeps the description's line breaks and shows each option's default."""


#: Help of the ``--print-config`` flag of the commands that take ``--config`` and ``--set``.
PRINT_CONFIG_HELP = "print the resolved config (every key with its value, defaults included) and exit"


def load_cli_config(cls: type[T], args: Any, out_role: str) -> T | None:
    """A command's config from ``args.config`` and ``args.set``; with ``args.print_config`` it is printed
    and None returned, otherwise ``args.out`` is required (``out_role`` says what that folder is)."""
    config = load_config(cls, args.config, args.set or ())
    if args.print_config:
        print(config_yaml(config), end="")
        return None
    if args.out is None:
        raise ConfigError(f"--out is required: {out_role}")
    return config
