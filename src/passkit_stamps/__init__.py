"""passkit_stamps: stamp cards for Apple Wallet and Google Wallet."""

from __future__ import annotations

from .errors import (
    CardError,
    CredentialsError,
    InvalidPassError,
    PasskitStampsError,
    Problem,
    TemplateError,
    TextTemplateError,
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

__version__ = "0.1.0"

__all__ = [
    "Card",
    "CardError",
    "CardState",
    "CardTemplate",
    "Color",
    "CredentialsError",
    "Holder",
    "InvalidPassError",
    "PasskitStampsError",
    "Problem",
    "RewardStep",
    "TemplateError",
    "TextTemplateError",
    "Voucher",
    "VoucherKind",
    "__version__",
]
