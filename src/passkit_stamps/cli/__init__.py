"""The ``passkit-stamps`` command line.

Each area keeps its commands in its own module (``apple``, ``google``, ``cards``, ``serve``);
this module wires them into one group and turns every library error into a one-line reason and a
non-zero exit, never a traceback: exit 1 when a rule refuses a value (the library's errors and the
commands' own checks, e.g. ``--stamps`` out of range), exit 2 when the command line is malformed
(click's usage errors, options that do not go together).

The command modules import the library inside their commands, and a command's module is imported
when the command is asked for (:data:`COMMAND_MODULES`), so ``--help`` and each command load only
what they use (``tests/test_imports.py``; figures in ``docs/architecture.md``).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

import click

from ..errors import PasskitStampsError


def one_line(exc: BaseException) -> str:
    """An error as one line: multi-line messages (template problems, pass reasons) joined."""
    # Drop list bullets ("  - reason"), not the dashes of option names ("--wwdr").
    lines = [re.sub(r"^\s*-\s+", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    for line in lines[1:]:
        text += (" " if text.endswith(":") else "; ") + line
    return text


#: Each command and the modules that make it, the first defining it (``templates migrate`` is
#: merchant's). A command's modules are imported when it is asked for: ``stamp`` loads cards.py
#: alone, ``--help`` every module (tests/cli/test_cli_commands.py keeps this table complete).
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("build", "samples"), ("apple",)),
    "verify": ("verify",),
    **dict.fromkeys(("google-class", "google-object", "google-link"), ("google",)),
    **dict.fromkeys(
        (
            "issue",
            "stamp",
            "set-stamps",
            "redeem",
            "coupon",
            "message",
            "void",
            "delete",
            "card",
            "cards",
            "history",
            "journal",
            "export-csv",
        ),
        ("cards",),
    ),
    "templates": ("cards", "merchant"),
    **dict.fromkeys(("broadcast", "campaigns"), ("broadcast",)),
    **dict.fromkeys(("serve", "demo"), ("serve",)),
    "push": ("push",),
    "api-keys": ("apikeys",),
    **dict.fromkeys(("worker", "outbox"), ("worker",)),
    **dict.fromkeys(("pass", "update-holder", "enrol-url", "import"), ("merchant",)),
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMAND_MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            # The first module defines the command; the others add to it as they are imported.
            modules = [
                importlib.import_module(f"{__name__}.{m}") for m in COMMAND_MODULES[cmd_name]
            ]
            for command in modules[0].COMMANDS:
                if command.name == cmd_name:
                    self.add_command(command)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except PasskitStampsError as exc:
            raise click.ClickException(one_line(exc)) from None
        except (OSError, ValueError) as exc:
            if os.environ.get("PASSKIT_STAMPS_DEBUG"):
                raise
            raise click.ClickException(one_line(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="passkit-stamps")
def main() -> None:
    """Stamp cards for Apple Wallet and Google Wallet."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
