"""The ``passkit-stamps`` command line.

Each area keeps its commands in its own module (``apple``, ``google``, ``cards``, ``serve``);
this module wires them into one group and turns every library error into a one-line reason and a
non-zero exit, never a traceback: exit 1 when a rule refuses a value (the library's errors and the
commands' own checks, e.g. ``--stamps`` out of range), exit 2 when the command line is malformed
(click's usage errors, options that do not go together).

The command modules import the library inside their commands, so ``--help`` and each command
load only what they use (``tests/test_imports.py``; figures in ``docs/architecture.md``).
"""

from __future__ import annotations

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


class _Group(click.Group):
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


def _register() -> None:
    # Imported here so each area's module stays independent of the others.
    from . import apikeys, apple, broadcast, cards, google, merchant, push, serve, verify, worker

    for module in (apple, verify, google, cards, broadcast, serve, push, apikeys, worker, merchant):
        for command in module.COMMANDS:
            main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
