"""The documentation keeps up with the command line: no server, no subprocess.

``docs/cli.md`` is generated (``python -m bq2pg.cli.docs > docs/cli.md``) and must be current;
every command and option is documented in README.md or docs/cli.md; and every ``bq2pg
COMMAND`` the README mentions exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bq2pg.cli.docs import commands, render

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLI_MD_PATH = ROOT / "docs" / "cli.md"
CLI_MD = CLI_MD_PATH.read_text(encoding="utf-8") if CLI_MD_PATH.exists() else ""
COMMANDS = dict(commands())
REGENERATE = "run: python -m bq2pg.cli.docs > docs/cli.md"


def _sections(markdown: str) -> dict[str, str]:
    """``## bq2pg dlq list`` headings of docs/cli.md → the text of their sections."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _mentions(text: str, phrase: str) -> bool:
    """Whether ``phrase`` (``--to``, ``bq2pg dlq list``) occurs as a whole word in ``text``."""
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text) is not None


SECTIONS = _sections(CLI_MD)
OPTIONS = [
    (path, opt)
    for path, command in COMMANDS.items()
    for param in command.params
    if param.param_type_name == "option" and not getattr(param, "hidden", False)
    for opt in [*param.opts, *param.secondary_opts]
    if opt.startswith("--")
]


def test_cli_md_is_current():
    generated = render()
    assert generated == CLI_MD, f"docs/cli.md is stale or missing: {REGENERATE}"


@pytest.mark.parametrize("path", list(COMMANDS))
def test_command_is_documented(path):
    assert path in SECTIONS or _mentions(README, path), (
        f"{path} is documented neither in README.md nor in docs/cli.md ({REGENERATE})"
    )


@pytest.mark.parametrize(("path", "option"), OPTIONS, ids=[f"{p} {o}" for p, o in OPTIONS])
def test_option_is_documented(path, option):
    assert _mentions(SECTIONS.get(path, ""), option) or _mentions(README, option), (
        f"{path} {option} is documented neither in README.md nor in docs/cli.md ({REGENERATE})"
    )


def _readme_code(markdown: str) -> list[str]:
    """The fenced code blocks and inline code spans of a Markdown text."""
    fences = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
    blocks = fences.findall(markdown)
    return blocks + re.findall(r"`([^`\n]+)`", fences.sub("", markdown))


def _readme_commands() -> list[str]:
    """Every ``bq2pg <word> [<word>]`` in the README's code, as the command it names.

    Only lowercase words count (``bq2pg COMMAND`` is a placeholder, ``bq2pg.chunks`` a table);
    ``dlq list|show|purge`` names three commands. The second word is a subcommand only when
    the first is a group.
    """
    word = r"[a-z][a-z0-9-]*(?:\|[a-z][a-z0-9-]*)*"
    found = set()
    for code in _readme_code(README):
        for first, second in re.findall(rf"\bbq2pg[ \t]+({word})(?:[ \t]+({word}))?", code):
            for name in first.split("|"):
                path = f"bq2pg {name}"
                is_group = path in COMMANDS and hasattr(COMMANDS[path], "commands")
                if is_group and second:
                    found.update(f"{path} {sub}" for sub in second.split("|"))
                else:
                    found.add(path)
    return sorted(found)


def test_readme_mentions_commands():
    """The README does mention commands (else the test below would check nothing)."""
    assert "bq2pg copy" in _readme_commands()


@pytest.mark.parametrize("path", _readme_commands())
def test_readme_command_exists(path):
    assert path in COMMANDS, f"README.md mentions `{path}`, which is not a command"
