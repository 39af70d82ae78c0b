"""The media types of Apple Wallet files, defined once for the builder, the web app and the CLI."""

from __future__ import annotations

PKPASS_MIME_TYPE = "application/vnd.apple.pkpass"
PKPASSES_MIME_TYPE = "application/vnd.apple.pkpasses"

#: The image files of a pass at Wallet's three scales, as the builder writes them and the
#: verifier looks for them.
APPLE_SCALES = (1, 2, 3)


def _at_scales(kind: str) -> tuple[str, ...]:
    return tuple(f"{kind}.png" if s == 1 else f"{kind}@{s}x.png" for s in APPLE_SCALES)


APPLE_ICON_FILES = _at_scales("icon")
APPLE_LOGO_FILES = _at_scales("logo")
APPLE_STRIP_FILES = _at_scales("strip")
