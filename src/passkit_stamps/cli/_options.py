"""Option types shared by the command modules.

The command modules are imported for ``passkit-stamps --help`` and for every command, so they
import the library only inside the commands; a choice of enum values is therefore read from the
library when it is first needed (a command's help or a value to check), not at import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click


class LazyChoice(click.Choice[str]):
    """A :class:`click.Choice` whose values come from ``values()`` on first use."""

    def __init__(self, values: Callable[[], Sequence[str]]) -> None:
        self._values = values
        self._loaded: tuple[str, ...] | None = None
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:
        if self._loaded is None:
            self._loaded = tuple(self._values())
        return self._loaded

    @choices.setter
    def choices(self, _value: Any) -> None:
        pass  # click.Choice.__init__ assigns the (empty) eager choices


def card_states() -> list[str]:
    from ..model import CardState

    return [s.value for s in CardState]


def event_types() -> list[str]:
    from ..engine import EventType

    return [t.value for t in EventType]
