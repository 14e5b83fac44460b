"""The Markdown reference of the ``bq2pg`` command line, generated from the typer app.

``python -m bq2pg.cli.docs > docs/cli.md`` writes it, and ``tests/test_docs.py`` fails when the
file is stale. Each command, groups included, gets a section with its help text, its usage and
a table of its arguments and options, in plain text (no rich markup).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from typing import Any

import typer.core
import typer.main

from bq2pg.cli.app import app

INTRO = """\
# The bq2pg command line

This reference is generated from the command line itself by
`python -m bq2pg.cli.docs > docs/cli.md`: do not edit it by hand (`tests/test_docs.py` fails
when it is out of date). `bq2pg COMMAND --help` shows the same help.
"""


def commands() -> Iterator[tuple[str, Any]]:
    """Walk the app's commands, groups included, depth first in the order they were added.

    Yields:
        ``(path, command)`` pairs of click commands: ``("bq2pg", <root group>)``,
        ``("bq2pg copy", ...)``, …, ``("bq2pg dlq list", ...)``. Hidden commands are skipped.
    """

    def walk(path: str, command: Any) -> Iterator[tuple[str, Any]]:
        yield path, command
        if isinstance(command, typer.core.TyperGroup):
            for name, sub in command.commands.items():
                if not sub.hidden:
                    yield from walk(f"{path} {name}", sub)

    yield from walk("bq2pg", typer.main.get_command(app))


def _text(value: str | None) -> str:
    """A help text on one line, safe in a Markdown table cell."""
    text = " ".join(word for word in inspect.cleandoc(value or "").split() if word != "\b")
    return text.replace("|", r"\|").replace("<", r"\<")


def _argument_name(param: Any) -> str:
    return param.metavar or param.name.upper()


def _type(param: Any, ctx: Any) -> str:
    """The value a parameter takes (``flag``, ``count``, ``int``, ``path``, …) and its range."""
    if getattr(param, "count", False):
        return "count"
    if getattr(param, "is_flag", False):
        return "flag"
    if hasattr(param, "display_type_rich"):  # typer >= 0.22, which has its own click
        label = param.metavar or param.display_type_rich(ctx).strip("<>")
    else:
        label = param.metavar or param.type.name
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    bounds = " and ".join(
        ([f"x>={low}"] if low is not None else []) + ([f"x<={high}"] if high is not None else [])
    )
    return f"`{label.removesuffix(' range')}` ({bounds})" if bounds else f"`{label}`"


def _default(param: Any) -> str:
    """The default as the help shows it: the flag that is on, a value, or nothing."""
    if param.required:
        return "required"
    default = param.default
    if getattr(param, "secondary_opts", None) and getattr(param, "is_flag", False):
        return f"`{(param.opts if default else param.secondary_opts)[0]}`"
    if default is None or default is False or callable(default) or default == []:
        return ""
    if getattr(param, "count", False) and default == 0:
        return ""
    if isinstance(default, list | tuple):
        default = ",".join(str(value) for value in default)
    return f"`{getattr(default, 'value', default)}`"


def _help(param: Any) -> str:
    """The parameter's help text, with its environment variable when it has one."""
    text = _text(getattr(param, "help", None))
    envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
    missing = [name for name in envvars if name not in text]
    return f"{text} [env: {', '.join(missing)}]".strip() if missing else text


def _usage(path: str, command: Any, params: list[Any]) -> str:
    pieces = [path]
    if any(param.param_type_name == "option" for param in params):
        pieces.append("[OPTIONS]")
    for param in params:
        if param.param_type_name == "argument":
            name = _argument_name(param) + ("..." if param.nargs != 1 else "")
            pieces.append(name if param.required else f"[{name}]")
    if isinstance(command, typer.core.TyperGroup):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def section(path: str, command: Any) -> str:
    """Render one command as Markdown.

    Args:
        path: The command as typed, e.g. ``"bq2pg dlq list"``.
        command: Its click command or group.

    Returns:
        The section: heading, help, usage, then the subcommands of a group and the table of
        arguments and options.
    """
    ctx = typer.Context(command, info_name=path)
    params = [param for param in command.params if not getattr(param, "hidden", False)]
    lines = [f"## {path}", ""]
    for paragraph in inspect.cleandoc(command.help or "").split("\n\n"):
        lines += [_text(paragraph), ""]
    lines += ["```", _usage(path, command, params), "```", ""]
    if isinstance(command, typer.core.TyperGroup):
        for name, sub in command.commands.items():
            if not sub.hidden:
                anchor = f"{path} {name}".replace(" ", "-")
                summary = _text(sub.short_help or (sub.help or "").split("\n\n")[0])
                lines.append(f"- [`{path} {name}`](#{anchor}): {summary}")
        lines.append("")
    if params:
        lines += ["| argument or option | takes | default | description |", "|---|---|---|---|"]
    for param in params:
        if param.param_type_name == "argument":
            names = f"`{_argument_name(param)}`"
        else:
            names = " / ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
        row = [names, _type(param, ctx), _default(param), _help(param)]
        lines.append(f"| {' | '.join(row)} |")
    return "\n".join(lines).rstrip("\n") + "\n"


def render() -> str:
    """Render the whole command line reference (the contents of ``docs/cli.md``).

    Returns:
        Markdown: the introduction, then one section per command.
    """
    return "\n".join([INTRO, *(section(path, command) for path, command in commands())])


if __name__ == "__main__":
    sys.stdout.write(render())
