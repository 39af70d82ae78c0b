"""Apple Wallet: signing credentials, pass.json, signed .pkpass bundles, verification."""

from __future__ import annotations

from .bundle import (
    PKPASS_MIME_TYPE,
    PKPASSES_MIME_TYPE,
    PassBuilder,
    build_pkpasses,
)
from .credentials import SigningCredentials
from .passjson import build_pass_json, pass_strings
from .signing import sign_manifest
from .verify import VerifiedPass, verify_pkpass

__all__ = [
    "PKPASSES_MIME_TYPE",
    "PKPASS_MIME_TYPE",
    "PassBuilder",
    "SigningCredentials",
    "VerifiedPass",
    "build_pass_json",
    "build_pkpasses",
    "pass_strings",
    "sign_manifest",
    "verify_pkpass",
]
