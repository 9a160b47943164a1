"""Load, check, override and save `AtlasConfig` trees.

A YAML file holds only what differs from the schema defaults. Overrides use one convention on
every command: `--set section.key=value` (the value is parsed as YAML, so `--set
training.learning_rate=2e-4` and `--set data.cameras=[agentview_rgb]` both work). Every problem is
reported with the file, the dotted key, what was expected and, for a misspelt key or choice, the
closest valid name; the CLI turns a `ConfigError` into exit code 2 before anything is written.

A YAML file may start from another one: `base: other.yaml` (a path relative to the file) loads
that file first and applies this one's keys on top, mapping by mapping (a list or a value
replaces the base's). Shipped configs share their full-model block this way.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from atlas.config.schema import AtlasConfig

T = TypeVar("T")
log = logging.getLogger(__name__)
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ConfigError(ValueError):
    """A configuration problem that names the file, the key and how to fix it."""


def load_config(
    path: str | Path | None = None, overrides: typing.Sequence[str] = ()
) -> AtlasConfig:
    """Build the config: schema defaults <- YAML file <- `--set` overrides, then validate."""
    source = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides:
        _apply_override(raw, item)
        source = f"{source} (with --set overrides)" if "--set" not in source else source
    cfg = from_dict(AtlasConfig, _moved_keys(raw, source), source=source)
    problems = cfg.validate()
    if problems:  # one line, however many: every key named with what it needs
        listed = "; ".join(f"{key}: {msg}" for key, msg in problems)
        raise ConfigError(f"{source}: {listed}")
    return cfg


def from_dict(cls: type[T], data: dict[str, Any], source: str = "<dict>", prefix: str = "") -> T:
    """Build dataclass `cls` from a nested dict, checking every key and type."""
    if not isinstance(data, dict):
        where = prefix or "<top level>"
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{dotted}'{_suggest(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], source, dotted)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (what `config.yaml` in a run directory holds)."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: AtlasConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: AtlasConfig, path: str | Path) -> None:
    """Write the resolved config atomically (temporary sibling, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dump_yaml(cfg))
    tmp.replace(path)


def config_from_resolved(data: dict[str, Any], source: str) -> AtlasConfig:
    """Rebuild a config saved by `save_config` / `to_dict` (checkpoints, exported models)."""
    return from_dict(AtlasConfig, _moved_keys(data, source), source=source)


# Keys that moved, (section, key) -> (section, key). Configs written before the move (YAML files,
# the config.yaml of earlier runs, exported policies) still load; a file holding both is an error.
MOVED_KEYS = {("training", "loss"): ("model", "loss")}


def _moved_keys(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """`raw` with every key of MOVED_KEYS at its new place (a new dict where something moved)."""
    for (old_section, key), (new_section, new_key) in MOVED_KEYS.items():
        old, new = raw.get(old_section), raw.get(new_section) or {}
        if not isinstance(old, dict) or key not in old or not isinstance(new, dict):
            continue  # nothing to move (or a type error that from_dict reports)
        if new_key in new:
            raise ConfigError(
                f"{source}: both '{old_section}.{key}' and '{new_section}.{new_key}' are set; "
                f"keep only '{new_section}.{new_key}'"
            )
        rest = {k: v for k, v in old.items() if k != key}
        raw = {**raw, old_section: rest, new_section: {**new, new_key: old[key]}}
        log.warning("%s: '%s.%s' is now '%s.%s'", source, old_section, key, new_section, new_key)
    return raw


# ------------------------------------------------------------------------------------- internals


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            mark = key_node.start_mark
            if key in seen:
                first = seen[key]
                where = f"lines {first.line + 1} and {mark.line + 1}"
                if first.line == mark.line:
                    where = (
                        f"line {mark.line + 1}, columns {first.column + 1} and {mark.column + 1}"
                    )
                raise ConfigError(
                    f"{mark.name}: key '{key}' appears twice in one mapping ({where}); the second "
                    "would silently replace the first: merge them into one"
                )
            seen[key] = mark
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, name: str) -> Any:
    """YAML text -> data, with duplicate keys refused; `name` is what marks and errors cite."""
    loader = _UniqueKeyLoader(text)
    loader.name = name  # the file (or flag) the marks of the messages name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


BASE_KEY = "base"


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file's mapping with its `base:` chain resolved (module doc)."""
    raw = _read_one_yaml(path)
    if BASE_KEY not in raw:
        return raw
    base = raw.pop(BASE_KEY)
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: '{BASE_KEY}' must name a YAML file, got {base!r}")
    base_path = (path.parent / base).resolve()
    chain = (*chain, path.resolve())
    if base_path in chain:
        loop = " -> ".join(str(p) for p in (*chain, base_path))
        raise ConfigError(f"{path}: '{BASE_KEY}: {base}' makes a loop: {loop}")
    if not base_path.is_file():
        raise ConfigError(f"{path}: '{BASE_KEY}: {base}' not found (looked for {base_path})")
    return _merge(_read_yaml(base_path, chain), raw)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        out[key] = (
            _merge(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
        )
    return out


def _read_one_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (pass --config PATH to an existing YAML)")
    try:
        raw = _parse_yaml(path.read_text(), str(path))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(e)}") from None
    if raw is None:  # an empty file is a mistake: a config holds at least what it changes
        raise ConfigError(
            f"{path}: the file is empty; a config holds the keys that differ from the defaults "
            "(see atlas/configs/debug.yaml), or leave out --config for the demo"
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (model, data, training, ...), "
            f"got a {type(raw).__name__}"
        )
    return raw


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.learning_rate=2e-4")
    key, _, text = item.partition("=")
    try:
        value = _parse_yaml(text, f"--set {key}") if text.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(
            f"--set {item}: the value is not valid YAML ({_one_line(e)}); check brackets and "
            "quotes, e.g. --set data.cameras=[agentview_rgb,eye_in_hand_rgb]"
        ) from None
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _one_line(error: yaml.YAMLError) -> str:
    """PyYAML's multi-line message (problem, context, a caret drawing) as one line."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _suggest(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(options)})"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, source: str, key: str) -> Any:  # noqa: C901 - one type switch
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def fail(expected: str) -> ConfigError:
        got = f"{type(value).__name__} {value!r}"
        return ConfigError(f"{source}: {key}: expected {expected}, got {got}")

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], source, key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, prefix=f"{key}.")
    if origin is Literal:
        if value in args:
            return value
        hint = _suggest(str(value), [str(a) for a in args]) if isinstance(value, str) else ""
        raise ConfigError(f"{source}: {key}: expected one of {_type_name(tp)}, got {value!r}{hint}")
    if origin is list:
        if isinstance(value, str) and args[0] is str:
            value = [value]  # a single path or camera is accepted as a one-item list
        if not isinstance(value, list):
            raise fail(f"a list of {_type_name(args[0])}")
        return [_coerce(v, args[0], source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail(f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}")
        return {str(k): _coerce(v, args[1], source, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail("a boolean (true or false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept numeric literals, nothing else.
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)
        raise fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail("a string")
    raise ConfigError(f"{source}: {key}: unsupported schema type {tp!r}")  # schema bug, not user
