"""One exception hierarchy for the whole library.

Every error a caller can act on derives from :class:`PasskitStampsError`. The class name says what
went wrong; the message says which input to fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class PasskitStampsError(Exception):
    """Base class of every error raised by passkit_stamps."""


# -- templates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One problem found in a template: where it is and what is wrong."""

    place: str  # e.g. "template.toml: rewards[1].at" or "images/logo.png"
    message: str

    def __str__(self) -> str:
        return f"{self.place}: {self.message}"


class TemplateError(PasskitStampsError):
    """A card template is invalid. ``problems`` lists every problem with its place."""

    def __init__(self, problems: Iterable[Problem], *, source: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.source = source
        head = f"invalid card template {source}" if source else "invalid card template"
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{head} ({len(self.problems)} problem(s)):\n{lines}")


class TextTemplateError(PasskitStampsError):
    """A jinja2 text template failed to render (or tried to escape the sandbox)."""


class ImageError(PasskitStampsError, ValueError):
    """An image cannot be rendered as asked: unknown kind, scale or size out of range."""


# -- Apple: credentials, building, verifying ----------------------------------------------------


class CredentialsError(PasskitStampsError):
    """Signing credentials could not be used. The message names the file and the fix."""


class WrongPasswordError(CredentialsError):
    """The password of a .p12 file or an encrypted key is wrong or missing."""


class KeyMismatchError(CredentialsError):
    """The private key does not belong to the certificate."""


class NotPassTypeCertificateError(CredentialsError):
    """The certificate is not an Apple Pass Type ID certificate."""


class CertificateExpiredError(CredentialsError):
    """A certificate is expired or not yet valid."""


class WWDRCertificateError(CredentialsError):
    """The WWDR intermediate is wrong (did not issue the signer) or expired."""


class PassBuildError(PasskitStampsError):
    """A pass cannot be built from its inputs (e.g. identifiers disagree with the certificate)."""


class InvalidPassError(PasskitStampsError):
    """A .pkpass failed verification. ``reasons`` lists every reason."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons: tuple[str, ...] = tuple(reasons)
        super().__init__("invalid pass:\n" + "\n".join(f"  - {r}" for r in self.reasons))


class UnsafeArchiveError(InvalidPassError):
    """An archive is oversized or would unpack to an unreasonable size (zip bomb)."""


# -- the stamp engine -----------------------------------------------------------------------------


class CardError(PasskitStampsError):
    """An operation on a card is not allowed in its current state."""


class InvalidStampCountError(CardError):
    """A stamp count is out of range (n < 1, negative, or above the template's limits)."""


class StampLimitError(CardError):
    """A template limit refuses the stamp: too many per visit, or within the cool-down."""


class CardInactiveError(CardError):
    """The card is voided, expired, completed or deleted and cannot change."""


class VoucherError(CardError):
    """A voucher cannot be redeemed: unknown, already redeemed, or belongs to another card."""


class CardInputError(CardError):
    """An input to a card operation is malformed (serial, language, code, coupon or message
    text) or does not belong to the card (a template of another id or version).

    When a model (Card, Holder, Voucher) refused its fields, ``problems`` lists each field and
    its rule; otherwise it is empty."""

    def __init__(self, message: str, *, problems: Iterable[Problem] = ()) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(message)


# -- storage ------------------------------------------------------------------------------------


class StoreError(PasskitStampsError):
    """The store failed or its schema cannot be used."""


class StoreNotFoundError(StoreError):
    """Opened for reading, the store does not exist (no SQLite file, no PostgreSQL database)
    or has no tables: nothing was created."""


class NotFoundError(PasskitStampsError):
    """Something looked up does not exist."""


class CardNotFoundError(NotFoundError):
    """No card has this serial (or it was deleted)."""


class RegistrationLimitError(PasskitStampsError):
    """A pass already has as many registered devices as allowed; a new device is refused
    (devices already registered keep working)."""


class TemplateNotFoundError(NotFoundError):
    """No template with this id (or version) was published."""


class IdempotencyConflictError(PasskitStampsError):
    """An idempotency key was reused for a different operation."""


# -- Google Wallet ------------------------------------------------------------------------------


class GoogleWalletError(PasskitStampsError):
    """The Google Wallet API answered with an error. Carries Google's reason and message."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        google_message: str | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.google_message = google_message
        super().__init__(message)


class GoogleValidationError(GoogleWalletError):
    """400: Google refused the payload (bad id, unknown field, bad enum)."""


class GooglePermissionError(GoogleWalletError):
    """403: the service account may not act for this issuer."""


class GoogleNotificationQuotaError(GooglePermissionError):
    """403 quotaExceeded: the pass has used its notifications for the last 24 hours."""


class GoogleNotFoundError(GoogleWalletError):
    """404: the object does not exist."""


class GoogleClassNotFoundError(GoogleNotFoundError):
    """404 on an object insert: its class does not exist."""


class GoogleAlreadyExistsError(GoogleWalletError):
    """409: the resource already exists."""


class GoogleRateLimitedError(GoogleWalletError):
    """429 after every retry: too many requests."""


class GoogleTransientError(GoogleWalletError):
    """5xx or a connection error after every retry."""


class GoogleAuthError(GoogleWalletError):
    """Service-account credentials are missing, malformed, or were refused."""


class CallbackVerificationError(PasskitStampsError):
    """A Google save/delete callback failed verification (signature, expiry, issuer, replay)."""


# -- the web app --------------------------------------------------------------------------------


class RequestError(PasskitStampsError):
    """An HTTP request is malformed: a path parameter, header or body the web app refuses (400)."""


class RequestTooLargeError(RequestError):
    """A request body is over the endpoint's size limit (413)."""


class CallbackReplayError(CallbackVerificationError):
    """A correctly signed callback whose nonce was seen before (Google retries; answer 200)."""


class CallbackBusyError(CallbackVerificationError):
    """Too many callbacks are waiting for signature verification; nothing was checked (429:
    Google retries a callback that was not answered with 2xx)."""


class GoogleConfigError(GoogleWalletError):
    """A Google Wallet setting or input is malformed (issuer id, image base URL, origin, link)."""


class WebConfigError(PasskitStampsError):
    """The web app's configuration is unusable (public URL, mount path, secret key)."""


# -- the till API -------------------------------------------------------------------------------


class ApiKeyError(PasskitStampsError):
    """An API key was refused: absent, malformed, unknown, wrong or revoked (all alike: 401)."""


class ApiKeyInputError(PasskitStampsError):
    """An API key's name or role is malformed (creating a key)."""


class ApiKeyNotFoundError(NotFoundError):
    """No API key has this id (revoking or naming one)."""


class ApiPermissionError(PasskitStampsError):
    """The API key's role may not do this (a staff key asking for a manager's operation: 403)."""


class ApiRateLimitError(PasskitStampsError):
    """An API key sent requests faster than its rate (429). ``retry_after``: seconds to wait."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)


# -- APNs (pass update pushes) ------------------------------------------------------------------


class APNsError(PasskitStampsError):
    """A push to Apple Push Notification service cannot be sent."""


class APNsInputError(APNsError):
    """An argument of the APNs client is malformed (a push token, a topic, a header default)."""


class APNsConfigurationError(APNsError):
    """APNs refused the credentials, the topic or the request format: every further push would
    fail the same way, so the client stops and says what to fix. ``reason`` is APNs' reason
    (verbatim), ``status`` its HTTP status, ``token`` the push token of the refused push."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        status: int | None = None,
        token: str | None = None,
    ) -> None:
        self.reason = reason
        self.status = status
        self.token = token
        super().__init__(message)


class APNsCertificateError(APNsConfigurationError):
    """The TLS client certificate was refused (BadCertificate, BadCertificateEnvironment,
    Forbidden, or a TLS alert during the handshake)."""


class APNsProviderTokenError(APNsConfigurationError):
    """The provider token (JWT) or its .p8 key was refused or cannot be used."""


class APNsTopicError(APNsConfigurationError):
    """The topic (pass type identifier) is missing, malformed or not allowed for the
    credentials (BadTopic, MissingTopic, TopicDisallowed)."""


class APNsRequestError(APNsConfigurationError):
    """APNs refused the request's format (a header default, the payload, the path)."""


class APNsServerCertificateError(APNsConfigurationError):
    """The server's TLS certificate is not trusted (wrong host or CA file) or the server does not
    speak HTTP/2."""


class APNsClosedError(APNsError):
    """The client is closed (or closing): it sends no more pushes."""


# -- e-mail and enrolment (issue 13) --------------------------------------------------------------


class EmailError(PasskitStampsError):
    """An e-mail could not be configured or sent."""


class EmailConfigError(EmailError):
    """The SMTP URL or the sender address is invalid (the message names the part)."""


class EmailRetryableError(EmailError):
    """The server was unreachable or refused for now (4xx, or 5xx for the whole transaction):
    the message stays in the outbox and is tried again."""


class EmailPermanentError(EmailError):
    """Retrying cannot help: the recipient address was refused (5xx at RCPT), or there is
    nothing to send (the card is gone, no address)."""


class EnrolmentError(PasskitStampsError):
    """An enrolment form was refused (expired or forged form token, rate limit, bad field)."""


class ImportRowError(PasskitStampsError):
    """A row of an import file is invalid; the message names the line and the column."""
