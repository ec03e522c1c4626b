"""Config fields from text, checked by their type hints: what ``--set field=value`` and a
resumed run's changes go through before any file is written.

A value is parsed as its field's type says, never guessed: ``epochs=1.5`` and
``epochs='"2"'`` are refused for an ``int``, ``milestones=5`` for a tuple, ``maybe`` for a
``bool``; floats must be finite.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


def field_types(cls: type) -> dict[str, Any]:
    """Each dataclass field's resolved type hint."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def parse_fields(cls: type, pairs: dict[str, str], what: str = "option") -> dict[str, Any]:
    """``{field: text}`` to ``{field: value}`` by ``cls``'s type hints; unknown fields and
    values that do not parse are errors naming the field and the value."""
    types_ = field_types(cls)
    unknown = sorted(set(pairs) - set(types_))
    if unknown:
        raise ValueError(f"unknown {what}(s): {', '.join(unknown)}; expected some of "
                         f"{', '.join(sorted(types_))}")
    return {name: parse_value(name, text, types_[name]) for name, text in pairs.items()}


def parse_value(name: str, text: str, hint: Any) -> Any:
    """One field's text as the type ``hint`` (int, float, bool, str, X | None, tuple[...],
    dict)."""
    args = typing.get_args(hint)
    if _is_union(hint):
        inner = [a for a in args if a is not type(None)]
        if text.strip().lower() in ("none", "null", ""):
            return None
        return parse_value(name, text, inner[0])
    origin = typing.get_origin(hint) or hint
    if origin is bool:
        low = text.strip().lower()
        if low in TRUE or low in FALSE:
            return low in TRUE
        raise ValueError(f"{name} must be true or false, got {text!r}")
    if origin is int:
        try:
            return int(text.strip(), 10)
        except ValueError:
            raise ValueError(f"{name} must be a whole number, got {text!r}") from None
    if origin is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {text!r}")
        return value
    if origin is str:
        return _json_string(text)
    if origin is tuple:
        return _tuple(name, text, args)
    if origin is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a JSON object such as '{{\"key\": 1}}', got "
                             f"{text!r}")
        return value
    raise ValueError(f"{name} cannot be set from text")  # no such field type today


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _json_string(text: str) -> str:
    if text.startswith('"'):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(value, str):
            return value
    return text


def _tuple(name: str, text: str, args: tuple) -> tuple:
    """A JSON list (``[0.5, 0.75]``) or comma-separated values (``0.5,0.75``)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError:
            raise ValueError(f"{name} must be a list such as [1, 2], got {text!r}") from None
        parts = [json.dumps(v) if not isinstance(v, str) else v for v in items]
    elif "," in stripped:
        parts = [p.strip() for p in stripped.split(",") if p.strip()]
    else:
        raise ValueError(f"{name} must be a list such as [1, 2] or 1,2, got {text!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        item_types = [args[0]] * len(parts)
    else:
        if len(parts) != len(args):
            raise ValueError(f"{name} must hold {len(args)} values, got {len(parts)} in "
                             f"{text!r}")
        item_types = list(args)
    return tuple(parse_value(name, p, t) for p, t in zip(parts, item_types, strict=True))


def check_types(obj: Any) -> None:
    """Every field of the dataclass ``obj`` holds a value of its declared type (a config
    built in Python or read from a run folder gets the same checks as the command line)."""
    for name, hint in field_types(type(obj)).items():
        problem = _type_problem(getattr(obj, name), hint)
        if problem:
            raise ValueError(f"{name} must be {problem}, got {getattr(obj, name)!r}")


def _type_problem(value: Any, hint: Any) -> str | None:
    if _is_union(hint):
        if value is None:
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _type_problem(value, inner[0])
    origin = typing.get_origin(hint) or hint
    if origin is bool:
        return None if isinstance(value, bool) else "true or false"
    if origin is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "a whole number"
    if origin is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "a number"
        return None if math.isfinite(value) else "a finite number"
    if origin is str:
        return None if isinstance(value, str) else "text"
    if origin is tuple:
        if not isinstance(value, tuple | list):
            return "a list"
        args = typing.get_args(hint)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item is None and len(value) != len(args):
            return f"a list of {len(args)} values"
        for i, v in enumerate(value):
            problem = _type_problem(v, item if item is not None else args[i])
            if problem:
                return f"a list of {problem.removeprefix('a ').removeprefix('an ')}s"
        return None
    if origin is dict:
        return None if isinstance(value, dict) else "a mapping"
    return None


def resume_changes(saved: Any, changes: dict[str, Any], changeable: tuple[str, ...]
                   ) -> tuple[Any, list[str]]:
    """The saved config of a run with ``changes`` applied where ``changeable``; a change
    to any other field is an error listing every such field. Returns the new config and a
    description of what changed. Values equal to the saved ones are not changes."""
    differ = {k: v for k, v in changes.items() if getattr(saved, k) != v}
    refused = [k for k in differ if k not in changeable]
    if refused:
        listed = ", ".join(f"{k} ({getattr(saved, k)!r} -> {differ[k]!r})" for k in refused)
        raise ValueError(f"a resumed run keeps its settings; these cannot change: {listed}. "
                         f"What may change: {', '.join(changeable)}; start a new run for "
                         "the rest")
    applied = [f"{k} {getattr(saved, k)!r} -> {v!r}" for k, v in differ.items()]
    return dataclasses.replace(saved, **differ), applied


def resumed_config(cfg: Any, state: dict, changes: dict[str, Any],
                   changeable: tuple[str, ...]) -> tuple[Any, list[str]]:
    """The config a resumed run continues with, for either trainer: the one saved in its
    training ``state`` (its folder ``out`` where it is now), with the safe ``changes``
    (:func:`resume_changes`; a new ``data`` compared as stored, absolute), validated, and
    never fewer ``epochs`` than the run has done. Returns it and what changed."""
    _check_same_kind(type(cfg), state["config"], cfg.out)
    saved = type(cfg).from_dict(state["config"]).replace(out=cfg.out)
    if "data" in changes:
        changes = {**changes, "data": str(Path(changes["data"]).expanduser().resolve())}
    cfg, applied = resume_changes(saved, changes, changeable)
    cfg.validate()
    done = state["epoch"]
    if cfg.epochs < done:
        raise ValueError(f"the run has done {done} epochs: epochs must be at least {done}, "
                         f"got {cfg.epochs}")
    return cfg, applied


def lr_jump(step: int, before: float, after: float, why: str) -> str:
    """How a resume's change moves the learning rate at the step it goes on from."""
    return f"learning rate at step {step:,}: {before:.4g} -> {after:.4g} ({why})"


def _check_same_kind(config_type: type, saved: dict, out: str) -> None:
    """A run folder of the other trainer (a classifier's for ``train-sr`` or the reverse),
    or one whose settings this version does not know, is refused in one line."""
    is_sr = "patch_size" in saved  # train-sr's settings have it, the classifier's do not
    wants_sr = config_type.__name__ == "SRTrainConfig"
    if is_sr != wants_sr:
        kind, other = ("train-sr", "train") if is_sr else ("train", "train-sr")
        raise ValueError(f"cannot resume {out} as a `resnets {other}` run: it is a "
                         f"`resnets {kind}` run; resume it with `resnets {kind}`")
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(config_type)})
    if unknown:
        raise ValueError(f"cannot resume {out}: its settings include "
                         f"{', '.join(unknown[:5])}, which this version of resnets does not "
                         "know (written by another version?)")
