"""``--notification-budget`` on ``serve`` and ``worker``, also from the environment."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from passkit_stamps.cli import main
from passkit_stamps.cli.serve import serve_command
from passkit_stamps.cli.worker import worker_command


@pytest.mark.parametrize("command", [serve_command, worker_command])
def test_budget_option_and_environment(command: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import click

    assert isinstance(command, click.Command)
    args = ["--db", "sqlite:///x.db"]
    assert command.make_context("x", list(args)).params["notification_budget"] == 3
    given = command.make_context("x", [*args, "--notification-budget", "1"])
    assert given.params["notification_budget"] == 1
    monkeypatch.setenv("PASSKIT_STAMPS_NOTIFICATION_BUDGET", "0")
    assert command.make_context("x", list(args)).params["notification_budget"] == 0
    monkeypatch.setenv("PASSKIT_STAMPS_NOTIFICATION_BUDGET", "-1")
    with pytest.raises(click.BadParameter):
        command.make_context("x", list(args))


def test_help_names_the_option() -> None:
    for name in ("serve", "worker"):
        out = CliRunner().invoke(main, [name, "--help"]).output
        assert "--notification-budget" in out and "PASSKIT_STAMPS_NOTIFICATION_BUDGET" in out
