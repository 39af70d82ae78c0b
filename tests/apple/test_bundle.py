"""Signed .pkpass bundles: contents, manifest, signature, determinism, caching, .pkpasses."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from passkit_stamps.apple.bundle import (
    MAX_PKPASSES,
    PKPASS_MIME_TYPE,
    PKPASSES_MIME_TYPE,
    PassBuilder,
    build_pkpasses,
)
from passkit_stamps.apple.credentials import SigningCredentials
from passkit_stamps.apple.verify import verify_pkpass
from passkit_stamps.errors import PassBuildError
from passkit_stamps.model import Card, CardTemplate, Holder
from passkit_stamps.runtime.devpki import DevPKI

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
URL = "https://passes.example.com/apple"


@pytest.fixture(scope="module")
def credentials(dev_pki: DevPKI) -> SigningCredentials:
    return dev_pki.credentials()


@pytest.fixture(scope="module")
def builder(credentials: SigningCredentials) -> PassBuilder:
    return PassBuilder(credentials, web_service_url=URL)


def card_for(template: CardTemplate, **changes: Any) -> Card:
    values: dict[str, Any] = {
        "serial": "113772",
        "template_id": template.id,
        "template_version": template.version,
        "created_at": NOW,
        "authentication_token": "tok-0123456789abcdef",
        "holder": Holder(name="Ada"),
        "stamps": 3,
    }
    values.update(changes)
    return Card(**values)


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def test_verify_accepts_the_pass(
    builder: PassBuilder, coffee: CardTemplate, dev_pki: DevPKI
) -> None:
    data = builder.build(coffee, card_for(coffee))
    verified = verify_pkpass(data, ca=dev_pki.root_cert.read_bytes())
    assert verified.chain_checked
    assert verified.style == "storeCard"
    assert verified.serial_number == "113772"
    assert verified.pass_type_identifier == dev_pki.pass_type_identifier
    assert verified.team_identifier == dev_pki.team_identifier
    assert verified.warnings == ()
    assert set(verified.files) == {
        "pass.json",
        "manifest.json",
        "signature",
        "en.lproj/pass.strings",
        *(f"{k}{s}.png" for k in ("icon", "logo", "strip") for s in ("", "@2x", "@3x")),
    }
    assert verified.pass_json["webServiceURL"] == URL


def test_files_and_manifest_hashes(builder: PassBuilder, salon: CardTemplate) -> None:
    files = unzip(builder.build(salon, card_for(salon)))
    manifest = json.loads(files["manifest.json"])
    assert set(manifest) == set(files) - {"manifest.json", "signature"}
    assert {"en.lproj/pass.strings", "de.lproj/pass.strings"} <= set(manifest)
    for name, sha1 in manifest.items():
        assert hashlib.sha1(files[name]).hexdigest() == sha1, name
    assert files["de.lproj/pass.strings"].startswith(b"\xff\xfe")
    assert "Stempel" in files["de.lproj/pass.strings"][2:].decode("utf-16-le")
    for name in manifest:
        if name.endswith(".png"):
            assert files[name].startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command line not installed")
def test_openssl_verifies_the_signature(
    builder: PassBuilder, coffee: CardTemplate, dev_pki: DevPKI, tmp_path: Path
) -> None:
    files = unzip(builder.build(coffee, card_for(coffee)))
    (tmp_path / "signature").write_bytes(files["signature"])
    (tmp_path / "manifest.json").write_bytes(files["manifest.json"])
    command = [
        "openssl", "cms", "-verify", "-binary", "-inform", "DER",
        "-in", "signature", "-content", "manifest.json",
        "-CAfile", str(dev_pki.root_cert), "-purpose", "any", "-out", "/dev/null",
    ]  # fmt: skip
    ok = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    # The same check fails once the manifest changes by one byte.
    (tmp_path / "manifest.json").write_bytes(files["manifest.json"].replace(b"{", b"{ ", 1))
    bad = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert bad.returncode != 0


def test_zip_is_stored_ordered_and_timeless(builder: PassBuilder, coffee: CardTemplate) -> None:
    data = builder.build(coffee, card_for(coffee))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    names = [i.filename for i in infos]
    assert names[0] == "pass.json"
    assert names[-2:] == ["manifest.json", "signature"]
    assert names.index("icon.png") < names.index("strip.png") < names.index("en.lproj/pass.strings")
    for info in infos:
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr >> 16 == 0o100644
        assert info.compress_size == info.file_size


def test_two_builds_differ_only_in_signature(
    credentials: SigningCredentials, salon: CardTemplate
) -> None:
    card = card_for(salon)
    first = PassBuilder(credentials, web_service_url=URL, clock=lambda: NOW).build(salon, card)
    later = NOW + timedelta(hours=1)
    second = PassBuilder(credentials, web_service_url=URL, clock=lambda: later).build(salon, card)
    a, b = unzip(first), unzip(second)
    assert list(a) == list(b)
    assert [n for n in a if a[n] != b[n]] == ["signature"]
    # With the signing time pinned too, the bytes are identical (RSA PKCS#1 v1.5).
    again = PassBuilder(credentials, web_service_url=URL, clock=lambda: NOW).build(salon, card)
    assert again == first


def test_signed_pass_cached_by_content(
    credentials: SigningCredentials, coffee: CardTemplate
) -> None:
    times = iter([NOW, NOW + timedelta(seconds=5), NOW + timedelta(seconds=10)])
    builder = PassBuilder(credentials, clock=lambda: next(times), cache_size=2)
    card = card_for(coffee)
    first = builder.build(coffee, card)
    assert builder.build(coffee, card) is first  # not re-signed
    digest = builder.content_digest(coffee, card)
    assert digest == builder.content_digest(coffee, card.model_copy())
    stamped = card.model_copy(update={"stamps": 4})
    messaged = card.model_copy(update={"message": "Hello"})
    digests = {digest, builder.content_digest(coffee, stamped)}
    digests.add(builder.content_digest(coffee, messaged))
    assert len(digests) == 3
    assert builder.build(coffee, stamped) != first


def test_content_digest_is_the_manifest_hash(builder: PassBuilder, coffee: CardTemplate) -> None:
    card = card_for(coffee)
    manifest = unzip(builder.build(coffee, card))["manifest.json"]
    assert builder.content_digest(coffee, card) == hashlib.sha256(manifest).hexdigest()


def test_cache_is_bounded(credentials: SigningCredentials, coffee: CardTemplate) -> None:
    builder = PassBuilder(credentials, cache_size=2)
    for i in range(5):
        builder.build(coffee, card_for(coffee, serial=f"S{i}"))
    assert len(builder._signed) == 2
    uncached = PassBuilder(credentials, cache_size=0)
    card = card_for(coffee)
    assert uncached.build(coffee, card) is not uncached.build(coffee, card)
    with pytest.raises(ValueError, match="cache size"):
        PassBuilder(credentials, cache_size=-1)


def test_identifiers_from_the_certificate(
    credentials: SigningCredentials, coffee: CardTemplate
) -> None:
    explicit = PassBuilder(
        credentials,
        pass_type_identifier=credentials.pass_type_identifier,
        team_identifier=credentials.team_identifier,
    )
    data = json.loads(unzip(explicit.build(coffee, card_for(coffee)))["pass.json"])
    assert data["passTypeIdentifier"] == "pass.com.example.stamps"
    assert data["teamIdentifier"] == "EXAMPLE123"


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ({"pass_type_identifier": "pass.com.other.cards"}, "UID 'pass.com.example.stamps'"),
        ({"team_identifier": "OTHERTEAM1"}, "OU 'EXAMPLE123'"),
    ],
)
def test_identifiers_disagreeing_with_the_certificate_refused(
    credentials: SigningCredentials, given: dict[str, str], reason: str
) -> None:
    with pytest.raises(PassBuildError, match=reason):
        PassBuilder(credentials, **given)


def test_bad_web_service_url_refused_at_construction(credentials: SigningCredentials) -> None:
    with pytest.raises(PassBuildError, match="appends"):
        PassBuilder(credentials, web_service_url="https://passes.example.com/v1/")
    with pytest.raises(PassBuildError, match="http"):
        PassBuilder(credentials, web_service_url="http://127.0.0.1:8000/")
    PassBuilder(credentials, web_service_url="http://127.0.0.1:8000/", allow_http=True)


# -- .pkpasses ---------------------------------------------------------------------------------


def test_pkpasses_bundle(builder: PassBuilder, coffee: CardTemplate, dev_pki: DevPKI) -> None:
    assert PKPASS_MIME_TYPE == "application/vnd.apple.pkpass"
    assert PKPASSES_MIME_TYPE == "application/vnd.apple.pkpasses"
    passes = [builder.build(coffee, card_for(coffee, serial=f"C{i}")) for i in range(3)]
    passes.append(passes[0])  # the same serial twice gets a distinct name
    files = unzip(build_pkpasses(passes))
    assert list(files) == ["C0.pkpass", "C1.pkpass", "C2.pkpass", "C0-2.pkpass"]
    for name, data in files.items():
        assert verify_pkpass(data, ca=dev_pki.root_cert.read_bytes()).serial_number == name[:2]


def test_pkpasses_limits(builder: PassBuilder, coffee: CardTemplate) -> None:
    one = builder.build(coffee, card_for(coffee))
    assert len(unzip(build_pkpasses([one] * MAX_PKPASSES))) == MAX_PKPASSES
    with pytest.raises(PassBuildError, match="at least one"):
        build_pkpasses([])
    with pytest.raises(PassBuildError, match="at most 10 passes"):
        build_pkpasses([one] * (MAX_PKPASSES + 1))
    huge = bytes(151 * 1024 * 1024)  # zero pages: costs address space, not memory
    with pytest.raises(PassBuildError, match="150 MB"):
        build_pkpasses([one, huge])
    with pytest.raises(PassBuildError, match=r"pass 2 is not a readable \.pkpass"):
        build_pkpasses([one, b"not a zip"])


def test_strips_are_cached_once_in_the_image_cache(
    builder: PassBuilder, coffee: CardTemplate
) -> None:
    from passkit_stamps import images

    builder.build(coffee, card_for(coffee, serial="CACHE-1", stamps=6))
    images.clear_cache()
    # no private copy in the builder: the next pass with 6 stamps asks the image cache again
    builder.build(coffee, card_for(coffee, serial="CACHE-2", stamps=6))
    assert images.cache_info()["misses"] >= 1


def test_apple_image_names_are_defined_once() -> None:
    from passkit_stamps.apple import bundle, media, verify

    assert media.APPLE_ICON_FILES == ("icon.png", "icon@2x.png", "icon@3x.png")
    assert media.APPLE_LOGO_FILES == ("logo.png", "logo@2x.png", "logo@3x.png")
    assert verify.ICON_NAMES is media.APPLE_ICON_FILES
    assert not hasattr(bundle, "ICON_NAMES") and not hasattr(bundle, "LRUCache")
