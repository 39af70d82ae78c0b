"""CLI commands: verify."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
