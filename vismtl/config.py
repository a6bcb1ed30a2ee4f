"""Config files: loading, overrides and keyword checking with messages that name the culprit.

Configs are Python files in mmsegmentation's style (``_base_`` inheritance, ``--cfg-options
a.b=c`` overrides) loaded with mmengine's ``Config``. Every builder in vismtl takes keyword
arguments only; :func:`call_with_config` turns a misspelt or missing key into one
:class:`ConfigError` that names the section, the key and the closest valid spelling.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from mmengine.config import Config, ConfigDict, DictAction

__all__ = [
    "Config",
    "ConfigError",
    "DictAction",
    "call_with_config",
    "check_call",
    "check_keys",
    "load_config",
    "to_plain",
]

# Sections a vismtl config may have at its top level.
TOP_LEVEL_KEYS = (
    "tasks",
    "model",
    "data",
    "optimizer",
    "schedule",
    "train",
    "evaluation",
    "seed",
    "work_dir",
    "wsi",
)


class ConfigError(ValueError):
    """A config (or a command-line option that feeds one) is wrong; the message says how."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close spelling exists, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_keys(given: Iterable[str], allowed: Iterable[str], where: str) -> None:
    """Raise a ConfigError naming the first key of ``given`` that is not in ``allowed``."""
    allowed = list(allowed)
    for key in given:
        if key not in allowed:
            raise ConfigError(
                f"unknown key '{key}' in {where}{suggest(key, allowed)}; valid keys: {', '.join(sorted(allowed))}"
            )


def load_config(path: str | Path, options: Mapping[str, Any] | None = None) -> Config:
    """Read a config file, apply ``--cfg-options`` style overrides and check the top level.

    Args:
        path: the config file (``.py``).
        options: overrides ``{"train.max_iters": 100, ...}``; keys must name existing
            entries, so that a typo in an override does not silently add a new key.
    """
    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.parent.is_dir():
            near = suggest(path.name, [p.name for p in path.parent.glob("*.py")])
            hint = near.replace(" (", "; ").replace(")", "") if near else ""
        raise ConfigError(f"config file not found: {path}{hint}")
    try:
        cfg = Config.fromfile(str(path))
    except Exception as err:  # syntax errors, bad _base_ paths, ...
        raise ConfigError(f"cannot read config {path}: {err}") from err
    if options:
        for dotted in options:
            _check_override_exists(cfg, dotted, path)
        cfg.merge_from_dict(dict(options))
    # Names starting with "_" are the file's own helper variables (e.g. a shared pipeline).
    check_keys([k for k in cfg.keys() if not k.startswith("_")], TOP_LEVEL_KEYS, f"config {path}")
    return cfg


def _check_override_exists(cfg: Config, dotted: str, path: Path) -> None:
    """An override must target an existing key, except inside free-form dicts (tasks)."""
    node: Any = cfg.to_dict()
    parts = dotted.split(".")
    for depth, key in enumerate(parts):
        if isinstance(node, (list, tuple)) and key.isdigit():
            node = node[int(key)]
            continue
        if not isinstance(node, Mapping):
            return
        if key not in node:
            # Adding a brand-new entry is allowed only as the last component of an
            # existing dict whose keys are not fixed by a builder signature (checked later).
            if (depth == len(parts) - 1 and depth > 0) or (depth == 0 and key in TOP_LEVEL_KEYS):
                return
            where = ".".join(parts[:depth]) or "the top level"
            raise ConfigError(f"--cfg-options {dotted}: no key '{key}' in {where} of {path}{suggest(key, node.keys())}")
        node = node[key]


def to_plain(value: Any) -> Any:
    """ConfigDicts and tuples of them to plain dicts and lists (for JSON and builders)."""
    if isinstance(value, (ConfigDict, dict)):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_plain(v) for v in value)
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value


def call_with_config(fn: Callable[..., Any], cfg: Mapping[str, Any] | None, where: str, **extra: Any):
    """Call ``fn(**cfg, **extra)`` after checking every key against its signature.

    Unknown keys and missing required keys raise a :class:`ConfigError` naming ``where``
    (for example ``"model.decoder"``), the key and the valid keys.
    """
    kwargs = check_call(fn, cfg, where, extra)
    check_types(fn, kwargs, where)
    kwargs.update(extra)
    try:
        return fn(**kwargs)
    except ValueError as err:
        if type(err) is not ValueError:  # the callee's own kind (ConfigError, DatasetLayoutError): as it is
            raise
        # a plain ValueError: a value the callee refuses, e.g. torch.optim's "Invalid learning rate: -1"
        raise ConfigError(f"{where}: {err}") from err


# annotations checked by check_types, and how a message names them
_SIMPLE_TYPES = {bool: "True or False", int: "an integer", float: "a number", str: "a string", type(None): "None"}


def check_types(fn: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> None:
    """Refuse a value of another type than ``fn``'s annotation of its key says, where that
    annotation is made of bool, int, float, str and None (``"two"`` for an int fails here with
    the key named, not later inside the callee); other annotations are not checked."""
    try:
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:  # noqa: BLE001 -- annotations that do not resolve: nothing to check against
        return
    for name, value in kwargs.items():
        hint = hints.get(name)
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        allowed = typing.get_args(hint) if union else (hint,)
        if not all(t in _SIMPLE_TYPES for t in allowed) or any(_is_a(value, t) for t in allowed):
            continue
        wanted = " or ".join(_SIMPLE_TYPES[t] for t in allowed)
        raise ConfigError(f"{where}.{name} must be {wanted}, not {value!r}")


def _is_a(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)  # 1 is a number too
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def check_call(fn: Callable[..., Any], cfg: Mapping[str, Any] | None, where: str, extra: Iterable[str] = ()) -> dict:
    """The checks of :func:`call_with_config` without the call; returns the config as plain kwargs."""
    kwargs = dict(to_plain(dict(cfg or {})))
    extra = set(extra)
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not accepts_any:
        settable = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL and n not in extra]
        check_keys(kwargs, settable, where)
    for name, param in params.items():
        required = param.default is inspect.Parameter.empty and param.kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
        if required and name not in kwargs and name not in extra:
            raise ConfigError(f"missing key '{name}' in {where}")
    return kwargs
