"""Fixtures for the Apple tests: minimal signed .pkpass archives built from the dev PKI."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import pytest
from PIL import Image

from conftest import FIXTURES  # tests/conftest.py (pytest puts tests/ on sys.path)
from passkit_stamps.apple.credentials import SigningCredentials
from passkit_stamps.apple.signing import sign_manifest
from passkit_stamps.runtime.devpki import DevPKI

APPLE_SAMPLES = FIXTURES / "apple-sample-passes"

requires_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command line is not installed"
)


def png(size: int = 29) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 120, 40)).save(out, "PNG")
    return out.getvalue()


def pass_json(credentials: SigningCredentials, **overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "formatVersion": 1,
        "passTypeIdentifier": credentials.pass_type_identifier,
        "teamIdentifier": credentials.team_identifier,
        "serialNumber": "SERIAL-1",
        "organizationName": "Example Coffee",
        "description": "Coffee stamp card",
        "storeCard": {"primaryFields": [{"key": "stamps", "label": "Stamps", "value": "2/8"}]},
    }
    value.update(overrides)
    return {k: v for k, v in value.items() if v is not None}


def manifest_for(files: Mapping[str, bytes]) -> bytes:
    listing = {name: hashlib.sha1(content).hexdigest() for name, content in files.items()}
    return json.dumps(listing, indent=2).encode()


def zip_files(files: Mapping[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


PkpassFactory = Callable[..., bytes]


@pytest.fixture(scope="session")
def credentials(dev_pki: DevPKI) -> SigningCredentials:
    return dev_pki.credentials()


@pytest.fixture(scope="session")
def make_pkpass(credentials: SigningCredentials) -> PkpassFactory:
    """Build a signed pass; keyword arguments bend it to test one defect at a time.

    files: the content files (default pass.json + icon.png); extra: added AFTER signing (not in
    the manifest); drop: removed after signing; signature: replaces the signature bytes.
    """

    def make(
        *,
        files: Mapping[str, bytes] | None = None,
        extra: Mapping[str, bytes] | None = None,
        drop: tuple[str, ...] = (),
        signature: bytes | None = None,
        signer: SigningCredentials | None = None,
        signing_time: datetime | None = None,
        compression: int = zipfile.ZIP_STORED,
    ) -> bytes:
        content = dict(
            files
            if files is not None
            else {
                "pass.json": json.dumps(pass_json(credentials)).encode(),
                "icon.png": png(),
                "icon@2x.png": png(58),
            }
        )
        manifest = manifest_for(content)
        everything = {
            **content,
            "manifest.json": manifest,
            "signature": signature
            if signature is not None
            else sign_manifest(signer or credentials, manifest, signing_time=signing_time),
        }
        everything.update(extra or {})
        for name in drop:
            everything.pop(name)
        return zip_files(everything, compression=compression)

    return make
