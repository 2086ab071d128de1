"""Config fields that carry their command-line flag: one definition of a setting for code, files
and the CLI.

A config dataclass declares each setting with :func:`setting` (its default, a help sentence,
its choices and, if not ``--`` plus its name, its flag). :func:`add_flag` turns such a field into
an argparse option, and :func:`field_kinds` says which Python type a flag's text is read as, so
the CLI is generated from the dataclass and the two cannot drift apart (the training settings,
:class:`boomerang.train.DistillConfig`, and the evaluation data, :class:`boomerang.eval.EvalConfig`).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import field
from typing import Any


def setting(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple[str, ...] | None = None,
            flag: str | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A config field with what its command-line flag says about it: ``help``, the allowed
    ``choices`` and the ``flag`` (default: ``--`` and the name with dashes)."""
    meta = {"help": help, "choices": choices, "flag": flag}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def field_kinds(cls: type) -> dict[str, tuple[type, bool]]:
    """{field: (int | float | bool | str, may it be None)} for the settings of those types (a
    ``Literal`` of strings is a ``str`` whose choices the field names); other fields (tuples,
    nested dataclasses) are checked by their class's ``validate``."""
    hints = typing.get_type_hints(cls)
    kinds = {}
    for f in dataclasses.fields(cls):
        hint, args = hints[f.name], set(typing.get_args(hints[f.name]))
        optional = type(None) in args and len(args) == 2
        if optional:
            hint = next(a for a in args if a is not type(None))
        if typing.get_origin(hint) is typing.Literal and all(isinstance(a, str) for a in typing.get_args(hint)):
            hint = str
        if hint in (int, float, bool, str):
            kinds[f.name] = (hint, optional)
    return kinds


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a :func:`setting` field."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (calling its factory)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def shown(value: Any) -> str:
    """A default as it is typed on the command line."""
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "none"
    return str(value)


def add_flag(parser: argparse.ArgumentParser, f: dataclasses.Field, dest: str, kind: type,
             default: Any = None) -> None:
    """Add ``f``'s flag to ``parser``: read as ``kind`` (a switch for ``bool``), limited to its
    choices, its help ending with the field's default; the parsed value lands in ``dest``
    (``default`` when the flag is not given: None lets a config file or the field decide)."""
    meta, field_default = f.metadata, default_of(f)
    flag = flag_of(f)
    note = "" if field_default in (None, "") else f" (default: {shown(field_default)})"
    kw: dict[str, Any] = {"dest": dest, "default": default, "help": meta["help"] + note}
    if kind is bool:
        kw["action"] = argparse.BooleanOptionalAction
    else:
        kw["type"] = kind
        kw["metavar"] = "{" + ",".join(meta["choices"]) + "}" if meta.get("choices") else flag[2:].upper()
        if meta.get("choices"):
            kw["choices"] = meta["choices"]
    parser.add_argument(flag, **kw)
