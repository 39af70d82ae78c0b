"""Test doubles for integrators: a fake APNs (HTTP/2 + TLS on loopback). See docs/testing.md.

Importing this package is cheap: the server (h2, cryptography, PyJWT) loads on first use of a name.

    from passkit_stamps.testing import FakeAPNs, PushReply, RecordedPush
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .fake_apns import (
        MAX_PAYLOAD_BYTES,
        REASONS,
        FakeAPNs,
        FakeAPNsError,
        PushReply,
        RecordedPush,
        ServerIdentity,
    )

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "REASONS",
    "FakeAPNs",
    "FakeAPNsError",
    "PushReply",
    "RecordedPush",
    "ServerIdentity",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import fake_apns

        return getattr(fake_apns, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
