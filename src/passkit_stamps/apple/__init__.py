"""Apple Wallet: signing credentials, pass.json, signed .pkpass bundles, verification."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:  # what mypy and IDEs see; at run time the names load on first use
    from .bundle import PassBuilder, build_pkpasses
    from .credentials import SigningCredentials
    from .media import PKPASS_MIME_TYPE, PKPASSES_MIME_TYPE
    from .passjson import build_pass_json, pass_strings
    from .signing import sign_manifest
    from .verify import VerifiedPass, verify_pkpass

# Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "PKPASS_MIME_TYPE": "media",
    "PKPASSES_MIME_TYPE": "media",
    "PassBuilder": "bundle",
    "build_pkpasses": "bundle",
    "SigningCredentials": "credentials",
    "build_pass_json": "passjson",
    "pass_strings": "passjson",
    "sign_manifest": "signing",
    "VerifiedPass": "verify",
    "verify_pkpass": "verify",
}

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
