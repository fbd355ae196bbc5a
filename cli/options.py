"""Command-line options generated from the config dataclasses, and how they become a run configuration.

A field made with :func:`img2img.config.option` carries its help, flag,
choices and range; :func:`config_options` turns the fields of a dataclass
into click options with those checks and the model's defaults, named by the
field (so the values map onto the dataclass with no table in between).
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from img2img.checkpoint import NO_FOLDER, in_the_way
from img2img.config import RESUMABLE_SETTINGS, RunConfig, TrainConfig, cli_option, option_flag

# options that may accompany --resume: they do not change what the run computes
RESUMABLE = {*RESUMABLE_SETTINGS, "resume", "out", "dry_run"}


INT_LIMIT = 2**31 - 1  # the most of anything an integer option counts: beyond it torch refuses sizes with a traceback


def counts(minimum: int = 1, maximum: int = INT_LIMIT) -> click.IntRange:
    """An integer option that counts (images, steps, processes, pixels): ``minimum`` to ``maximum``, so that a
    value past what torch or numpy take (a 64-bit integer) is one line of click's, never their traceback."""
    return click.IntRange(min=minimum, max=maximum)


SEED = click.IntRange(min=0, max=2**63 - 1)  # what torch.manual_seed takes, as train's --seed


class FiniteFloat(click.FloatRange):
    """A float option that refuses nan and ±inf (which pass any range check) besides its range."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class Location(click.Path):
    """A file or folder: an empty value is refused (an unset shell variable, ``--a "$DATA"``), where it meant
    the current folder (training on whatever it holds, sample grids written into it)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value == "":
            self.fail("an empty path (an unset shell variable?); give a file or folder, '.' for this folder",
                      param, ctx)
        return super().convert(value, param, ctx)


class Word(click.ParamType):
    """A name (a translation's target, a class): an empty value is refused (an unset shell variable), where it
    meant the default."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip() == "":
            self.fail("an empty value (an unset shell variable?); leave the option out for its default", param, ctx)
        return value


# control characters as Python writes them in a string's repr: a file name may hold any of them
_ESCAPES = {code: repr(chr(code))[1:-1] for code in (*range(32), 127)}


def printable(text: str) -> str:
    """``text`` with its control characters escaped (``\\n``, ``\\x1b``): a file name with a newline broke a
    one-line error in two, and one with a terminal's escape sequence recoloured (or cleared) the terminal."""
    return text.translate(_ESCAPES)


OUTPUTS = "img2img.outputs"  # the key of the paths a command writes, in click's Context.meta


class Output(Location):
    """A path the command writes: refused at once if a file stands where a folder above it would be made (the
    command failed only when it came to write, naming its own temporary file or saying "File exists").  Each one
    given is recorded in the context's ``meta`` (which nested contexts share), so that an error with no file of
    its own (a full disk) can name where the command was writing."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        above = in_the_way(Path(path))  # the nearest that exists must be a folder
        if not above.is_dir():
            self.fail(f"{path}: {above} {NO_FOLDER}", param, ctx)
        if ctx is not None:
            record_output(ctx, path)
        return path


def record_output(ctx: click.Context, path: Any) -> None:
    ctx.meta.setdefault(OUTPUTS, []).append(str(path))


def _base_type(hint: Any) -> type:
    """``int | None`` → int; ``bool`` → bool."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return args[0] if args else hint


def config_options(cls: type, defaults: dict[str, Any] | None = None, only: tuple[str, ...] | None = None,
                   rename: dict[str, str] | None = None, help_overrides: dict[str, str] | None = None) -> list[Callable]:
    """Click options for the fields of dataclass ``cls`` that carry command-line metadata.

    ``defaults`` replaces field defaults (a model's training defaults);
    ``only`` keeps those fields; ``rename`` maps a field to another parameter
    name; ``help_overrides`` replaces a field's help.
    """
    defaults, rename, help_overrides = defaults or {}, rename or {}, help_overrides or {}
    hints = typing.get_type_hints(cls)
    options = []
    for f in dataclasses.fields(cls):
        meta = cli_option(f)
        if meta is None or (only is not None and f.name not in only):
            continue
        kind = _base_type(hints[f.name])
        flag = option_flag(f)
        default = defaults.get(f.name, f.default)
        param = rename.get(f.name, f.name)
        extra: dict[str, Any] = {}
        if kind is bool:
            decls = [flag] if meta.switch else [f"{flag}/--no-{flag[2:]}"]
            extra["is_flag"] = True if meta.switch else None
        else:
            decls = [flag]
            if meta.choices is not None:
                extra["type"] = click.Choice(meta.choices)
                if meta.bare is not None:  # the flag alone means this value; a value may follow it
                    extra["is_flag"], extra["flag_value"] = False, meta.bare
                if kind is int:
                    extra["callback"] = lambda ctx, p, value: None if value is None else int(value)
                    default = None if default is None else str(default)
            elif meta.path:
                extra["type"] = Location()
            elif kind is int:  # a count beyond 2³¹ is never meant, and overflows the libraries below
                extra["type"] = click.IntRange(min=meta.min, max=INT_LIMIT if meta.max is None else meta.max)
            elif kind is float:
                extra["type"] = FiniteFloat(min=meta.min, max=meta.max, min_open=meta.min_open,
                                            max_open=meta.max_open)
            else:
                extra["type"] = kind
        if default == "":
            extra["show_default"] = False
        extra = {key: value for key, value in extra.items() if value is not None}
        options.append(click.option(*decls, param, default=default, help=help_overrides.get(f.name, meta.help),
                                    **extra))
    return options


def decorate(command: Callable, options: list[Callable]) -> Callable:
    for option in reversed(options):
        command = option(command)
    return command


def speed_options(defaults: TrainConfig) -> list[Callable]:
    """How fast a step runs (see img2img.speed); shared by ``train``, ``translate`` and ``bench``."""
    return config_options(TrainConfig, dataclasses.asdict(defaults), only=("channels_last", "compile", "cudnn_benchmark"),
                          rename={"compile": "compile_mode"})


def cuda_graph_option(help: str) -> Callable:  # noqa: A002
    """``--cuda-graph [auto|on|off]`` of ``translate`` and ``bench`` (``train``'s is TrainConfig's): alone, on."""
    return config_options(TrainConfig, only=("cuda_graph",), help_overrides={"cuda_graph": help})[0]


def with_speed_options(command: Callable) -> Callable:
    """Decorate a command that runs networks (translate, bench) with the speed options and their defaults."""
    return decorate(command, speed_options(TrainConfig()))


def resume_changes(ctx: click.Context) -> dict[str, Any]:
    """The resumable settings given on the command line (not left at their defaults), by TrainConfig field."""
    return {name: value for name, value in ctx.params.items()
            if name in RESUMABLE_SETTINGS
            and ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)}


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)


def resume_moves(ctx: click.Context, data_fields: tuple[str, ...]) -> dict[str, str]:
    """The data folders given with --resume (``data_fields``: the command's path options), by field: where the
    run's data lies now, when it moved."""
    return {name: ctx.params[name] for name in data_fields if name in ctx.params and _given(ctx, name)}


def check_resume_options(ctx: click.Context, data_fields: tuple[str, ...] = ()) -> None:
    """With --resume, refuse options that would change what the saved run computes (``data_fields``, the new
    places of its data folders, may be given)."""
    for name in ctx.params:
        if name in RESUMABLE or name in data_fields:
            continue
        if _given(ctx, name):
            flags = {p.name: p.opts[0] for p in ctx.command.params}
            moved = [flags[field] for field in data_fields if field in flags]
            raise click.UsageError(f"{flags[name]} cannot be changed when resuming; --resume uses the run's saved "
                                   "settings (only --steps, --device, --channels-last, --compile, --cudnn-benchmark, "
                                   "--cuda-graph, --tensorboard and --out, a new run folder, may be given"
                                   + (f", and the new place of a data folder that moved: {', '.join(moved)}"
                                      if moved else "") + ")", ctx)


def default_out(model: str) -> str:
    return f"runs/{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def report_config(run: RunConfig) -> None:
    click.echo(f"resolved configuration:\n{run.to_json()}")


__all__ = ["OUTPUTS", "Location", "Output", "Word", "check_resume_options", "config_options", "decorate",
           "default_out", "printable", "record_output", "report_config", "resume_changes", "resume_moves",
           "speed_options", "with_speed_options"]
