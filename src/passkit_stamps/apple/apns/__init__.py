"""APNs: pass update pushes to Apple Push Notification service over HTTP/2.

    async with APNsClient(credentials) as apns:          # the Pass Type ID certificate
        result = await apns.push(push_token)
        async for result in apns.push_many(tokens):      # any (async) iterable, bounded memory
            ...

Each push gets a typed result (:class:`Delivered`, :class:`DeadToken`, :class:`RetryLater`,
:class:`Failed`); credentials, topic and request-format refusals stop the client and raise one
:class:`~passkit_stamps.errors.APNsConfigurationError` saying what to fix. See ``docs/push.md``.
"""

from __future__ import annotations

from ._auth import TokenAuth, client_ssl_context
from ._connection import APNsConnection, GoAway
from .client import (
    DEFAULT_EXPIRATION,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_PRIORITY,
    DEFAULT_PUSH_TYPE,
    APNsClient,
    check_token,
)
from .results import DeadToken, Delivered, Failed, PushResult, RetryLater

__all__ = [
    "DEFAULT_EXPIRATION",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_PRIORITY",
    "DEFAULT_PUSH_TYPE",
    "APNsClient",
    "APNsConnection",
    "DeadToken",
    "Delivered",
    "Failed",
    "GoAway",
    "PushResult",
    "RetryLater",
    "TokenAuth",
    "check_token",
    "client_ssl_context",
]
