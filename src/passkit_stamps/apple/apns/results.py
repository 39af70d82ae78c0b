"""What happened to one push: a typed result per push, mapped from Apple's table of responses.

Apple's table (``docs/push.md`` repeats it with the action for each row):

* 200: :class:`Delivered` (APNs accepted the push; ``apns_id`` is its id).
* 410 ``Unregistered``/``ExpiredToken`` (with a timestamp), 400 ``BadDeviceToken``/
  ``DeviceTokenNotForTopic``: :class:`DeadToken`, delete the registration.
* 429, 500, 503 and a lost connection: retried by the client with exponential back-off and jitter;
  :class:`RetryLater` when the retries are used up.
* Credentials, topic and request-format errors: not a result, the client stops and raises one
  :class:`~passkit_stamps.errors.APNsConfigurationError`.
* Anything else: :class:`Failed`, with the status and reason verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

__all__ = [
    "CONFIGURATION_REASONS",
    "DEAD_TOKEN_REASONS",
    "Action",
    "DeadToken",
    "Delivered",
    "Failed",
    "PushResult",
    "RetryLater",
    "classify",
]


@dataclass(frozen=True, slots=True)
class Delivered:
    """APNs accepted the push (200)."""

    token: str
    apns_id: str | None

    ok = True

    def __str__(self) -> str:
        return f"{self.token} delivered apns-id={self.apns_id}"


@dataclass(frozen=True, slots=True)
class DeadToken:
    """The push token is no longer valid for this topic: delete the registration, unless the
    device registered again after ``timestamp`` (410 only)."""

    token: str
    status: int
    reason: str
    timestamp: datetime | None = None
    apns_id: str | None = None

    ok = False

    def __str__(self) -> str:
        when = f" since {self.timestamp.isoformat()}" if self.timestamp else ""
        return f"{self.token} dead-token {self.status} {self.reason}{when}"


@dataclass(frozen=True, slots=True)
class RetryLater:
    """APNs was busy or unreachable after every retry: push this token again later.
    ``status`` is None when the connection was lost (``reason`` says how)."""

    token: str
    status: int | None
    reason: str
    attempts: int
    apns_id: str | None = None

    ok = False

    def __str__(self) -> str:
        status = self.status if self.status is not None else "-"
        return f"{self.token} retry-later {status} {self.reason} after {self.attempts} attempt(s)"


@dataclass(frozen=True, slots=True)
class Failed:
    """A response this client has no rule for: status and reason kept verbatim."""

    token: str
    status: int
    reason: str
    apns_id: str | None = None

    ok = False

    def __str__(self) -> str:
        return f"{self.token} failed {self.status} {self.reason}"


PushResult = Delivered | DeadToken | RetryLater | Failed


class Action(Enum):
    """What a response asks the client to do."""

    DELIVERED = "delivered"
    DEAD_TOKEN = "dead-token"
    RETRY = "retry"
    RENEW_TOKEN = "renew-token"  # ExpiredProviderToken: mint a new JWT, retry once
    CONFIGURATION = "configuration"
    UNKNOWN = "unknown"


DEAD_TOKEN_REASONS = frozenset(
    {"Unregistered", "ExpiredToken", "BadDeviceToken", "DeviceTokenNotForTopic"}
)

# reason -> (error kind, what to fix). The kind picks the error class in the client.
CONFIGURATION_REASONS: dict[str, tuple[str, str]] = {
    "BadCertificate": ("certificate", "APNs refused the client certificate"),
    "BadCertificateEnvironment": (
        "certificate",
        "the certificate is for the other APNs environment (Wallet pass pushes use production, "
        "api.push.apple.com)",
    ),
    "Forbidden": ("certificate", "APNs refused the credentials for this action"),
    "InvalidProviderToken": (
        "token",
        "the provider token is invalid: check the key id, the team id and that the .p8 key "
        "belongs to that team",
    ),
    "MissingProviderToken": (
        "token",
        "no provider token and no client certificate: configure one of them",
    ),
    "UnrelatedKeyIdInToken": ("token", "the key id does not belong to the team id"),
    "BadEnvironmentKeyIdInToken": (
        "token",
        "the .p8 key is not enabled for this APNs environment",
    ),
    "TooManyProviderTokenUpdates": (
        "token",
        "provider tokens were minted too often (more than once per 20 minutes): share one "
        "client per process",
    ),
    "ExpiredProviderToken": (
        "token",
        "APNs keeps calling fresh provider tokens expired: check this machine's clock",
    ),
    "BadTopic": ("topic", "the topic is malformed: use the pass type identifier"),
    "MissingTopic": ("topic", "the topic is missing: set the pass type identifier"),
    "TopicDisallowed": ("topic", "the credentials may not push to this topic"),
    "PayloadEmpty": ("request", "the payload is empty"),
    "PayloadTooLarge": ("request", "the payload is over 4096 bytes"),
    "BadPriority": ("request", "the apns-priority header is invalid"),
    "BadExpirationDate": ("request", "the apns-expiration header is invalid"),
    "InvalidPushType": ("request", "the apns-push-type header is invalid"),
    "BadMessageId": ("request", "the apns-id header is not a UUID"),
    "BadCollapseId": ("request", "the apns-collapse-id header is too long"),
    "DuplicateHeaders": ("request", "a header was sent twice"),
    "BadPath": ("request", "the request path is not /3/device/<token>: check --apns-host"),
    "MethodNotAllowed": ("request", "the request method is not POST"),
    "MissingDeviceToken": ("request", "the request has no device token"),
}

_RETRY_REASONS = frozenset(
    {"TooManyRequests", "InternalServerError", "ServiceUnavailable", "Shutdown", "IdleTimeout"}
)


def classify(status: int, reason: str | None) -> Action:
    """The action for an APNs status and reason (``reason`` verbatim from the JSON body)."""
    if status == 200:
        return Action.DELIVERED
    if reason == "ExpiredProviderToken":
        return Action.RENEW_TOKEN
    if reason in DEAD_TOKEN_REASONS and status in (400, 410):
        return Action.DEAD_TOKEN
    if reason in CONFIGURATION_REASONS and status in (400, 403, 404, 405, 413, 429):
        return Action.CONFIGURATION
    if status in (429, 500, 502, 503, 504) or reason in _RETRY_REASONS:
        return Action.RETRY
    return Action.UNKNOWN


def timestamp_from_ms(value: object) -> datetime | None:
    """APNs' 410 ``timestamp`` (milliseconds since the epoch) as an aware datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
