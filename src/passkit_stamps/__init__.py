"""passkit_stamps: stamp cards for Apple Wallet and Google Wallet.

The public surface is re-exported here; everything else lives in its own module
(``passkit_stamps.google`` for Google Wallet, ``passkit_stamps.images`` for pictures).

The names are loaded on first use (PEP 562): ``import passkit_stamps`` costs next to nothing,
and a caller who only builds passes never imports the store (SQLAlchemy), the web app
(Starlette) or, until a pass is built, Pillow. The command line depends on this for its start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what mypy and IDEs see; at run time __getattr__ below imports on demand
    from .apple.bundle import PassBuilder, build_pkpasses
    from .apple.credentials import SigningCredentials
    from .apple.verify import VerifiedPass, verify_pkpass
    from .engine import (
        Event,
        EventType,
        Platform,
    )
    from .errors import (
        CallbackReplayError,
        CallbackVerificationError,
        CardError,
        CardInactiveError,
        CardInputError,
        CardNotFoundError,
        CertificateExpiredError,
        CredentialsError,
        GoogleAlreadyExistsError,
        GoogleAuthError,
        GoogleClassNotFoundError,
        GoogleConfigError,
        GoogleNotFoundError,
        GoogleNotificationQuotaError,
        GooglePermissionError,
        GoogleRateLimitedError,
        GoogleTransientError,
        GoogleValidationError,
        GoogleWalletError,
        IdempotencyConflictError,
        ImageError,
        InvalidPassError,
        InvalidStampCountError,
        KeyMismatchError,
        NotFoundError,
        NotPassTypeCertificateError,
        PassBuildError,
        PasskitStampsError,
        Problem,
        RequestError,
        RequestTooLargeError,
        StampLimitError,
        StoreError,
        TemplateError,
        TemplateNotFoundError,
        TextTemplateError,
        UnsafeArchiveError,
        VoucherError,
        WebConfigError,
        WrongPasswordError,
        WWDRCertificateError,
    )
    from .model import (
        Card,
        CardState,
        CardTemplate,
        Color,
        Holder,
        RewardStep,
        Voucher,
        VoucherKind,
    )
    from .service import StampService
    from .store.store import Store
    from .web.app import create_app
    from .web.config import WebConfig

__version__ = "0.1.0"

# Public name -> the module (relative to this package) that defines it.
_EXPORTS: dict[str, str] = {
    "PassBuilder": "apple.bundle",
    "build_pkpasses": "apple.bundle",
    "SigningCredentials": "apple.credentials",
    "VerifiedPass": "apple.verify",
    "verify_pkpass": "apple.verify",
    "Event": "engine",
    "EventType": "engine",
    "Platform": "engine",
    "CallbackReplayError": "errors",
    "CallbackVerificationError": "errors",
    "CardError": "errors",
    "CardInactiveError": "errors",
    "CardInputError": "errors",
    "CardNotFoundError": "errors",
    "CertificateExpiredError": "errors",
    "CredentialsError": "errors",
    "GoogleAlreadyExistsError": "errors",
    "GoogleAuthError": "errors",
    "GoogleClassNotFoundError": "errors",
    "GoogleConfigError": "errors",
    "GoogleNotFoundError": "errors",
    "GoogleNotificationQuotaError": "errors",
    "GooglePermissionError": "errors",
    "GoogleRateLimitedError": "errors",
    "GoogleTransientError": "errors",
    "GoogleValidationError": "errors",
    "GoogleWalletError": "errors",
    "IdempotencyConflictError": "errors",
    "ImageError": "errors",
    "InvalidPassError": "errors",
    "InvalidStampCountError": "errors",
    "KeyMismatchError": "errors",
    "NotFoundError": "errors",
    "NotPassTypeCertificateError": "errors",
    "PassBuildError": "errors",
    "PasskitStampsError": "errors",
    "Problem": "errors",
    "RequestError": "errors",
    "RequestTooLargeError": "errors",
    "StampLimitError": "errors",
    "StoreError": "errors",
    "TemplateError": "errors",
    "TemplateNotFoundError": "errors",
    "TextTemplateError": "errors",
    "UnsafeArchiveError": "errors",
    "VoucherError": "errors",
    "WWDRCertificateError": "errors",
    "WebConfigError": "errors",
    "WrongPasswordError": "errors",
    "Card": "model",
    "CardState": "model",
    "CardTemplate": "model",
    "Color": "model",
    "Holder": "model",
    "RewardStep": "model",
    "Voucher": "model",
    "VoucherKind": "model",
    "StampService": "service",
    "Store": "store.store",
    "WebConfig": "web.config",
    "create_app": "web.app",
}

__all__ = [
    "CallbackReplayError",
    "CallbackVerificationError",
    "Card",
    "CardError",
    "CardInactiveError",
    "CardInputError",
    "CardNotFoundError",
    "CardState",
    "CardTemplate",
    "CertificateExpiredError",
    "Color",
    "CredentialsError",
    "Event",
    "EventType",
    "GoogleAlreadyExistsError",
    "GoogleAuthError",
    "GoogleClassNotFoundError",
    "GoogleConfigError",
    "GoogleNotFoundError",
    "GoogleNotificationQuotaError",
    "GooglePermissionError",
    "GoogleRateLimitedError",
    "GoogleTransientError",
    "GoogleValidationError",
    "GoogleWalletError",
    "Holder",
    "IdempotencyConflictError",
    "ImageError",
    "InvalidPassError",
    "InvalidStampCountError",
    "KeyMismatchError",
    "NotFoundError",
    "NotPassTypeCertificateError",
    "PassBuildError",
    "PassBuilder",
    "PasskitStampsError",
    "Platform",
    "Problem",
    "RequestError",
    "RequestTooLargeError",
    "RewardStep",
    "SigningCredentials",
    "StampLimitError",
    "StampService",
    "Store",
    "StoreError",
    "TemplateError",
    "TemplateNotFoundError",
    "TextTemplateError",
    "UnsafeArchiveError",
    "VerifiedPass",
    "Voucher",
    "VoucherError",
    "VoucherKind",
    "WWDRCertificateError",
    "WebConfig",
    "WebConfigError",
    "WrongPasswordError",
    "__version__",
    "build_pkpasses",
    "create_app",
    "verify_pkpass",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
