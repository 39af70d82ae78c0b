"""Fixtures for the command-line tests.

The Google helpers live in ``tests/google`` as plain modules (no package: one named ``google``
would shadow google-auth), so that folder goes on the import path here; the service-account
fixtures are taken by name.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "google"))

from walletfixtures import (
    rsa_key_fixture,
    sa_file_fixture,
    sa_info_fixture,
)

__all__ = ["rsa_key_fixture", "sa_file_fixture", "sa_info_fixture"]
