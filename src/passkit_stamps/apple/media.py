"""The media types of Apple Wallet files, defined once for the builder, the web app and the CLI."""

from __future__ import annotations

PKPASS_MIME_TYPE = "application/vnd.apple.pkpass"
PKPASSES_MIME_TYPE = "application/vnd.apple.pkpasses"
