"""The command table: every command module's commands are reachable by name, each from the module
that defines it, and no name is listed that no module makes (the group imports a command's module
when the command is asked for; see cli/__init__.py)."""

from __future__ import annotations

import importlib
import pkgutil

import click
from click.testing import CliRunner

import passkit_stamps.cli as cli
from passkit_stamps.cli import COMMAND_MODULES, main


def _modules_commands() -> dict[str, list[str]]:
    """Each command module (one with COMMANDS) and the names of its commands."""
    found: dict[str, list[str]] = {}
    for info in pkgutil.iter_modules(cli.__path__):
        module = importlib.import_module(f"{cli.__name__}.{info.name}")
        commands = getattr(module, "COMMANDS", None)
        if commands is not None:
            found[info.name] = [command.name for command in commands]
    return found


def test_the_table_lists_each_command_with_the_module_that_defines_it() -> None:
    defined = {name: module for module, names in _modules_commands().items() for name in names}
    assert {name: modules[0] for name, modules in COMMAND_MODULES.items()} == defined


def test_every_listed_command_resolves_to_its_own_command() -> None:
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name


def test_a_group_gets_the_subcommands_other_modules_add() -> None:
    templates = main.get_command(click.Context(main), "templates")
    assert isinstance(templates, click.Group)
    assert {"publish", "list", "migrate"} <= set(templates.commands)


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command 'no-such-command'" in result.output
