"""Verifying .pkpass files: every defect is reported, untrusted archives are bounded."""

from __future__ import annotations

import codecs
import io
import json
import struct
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from passkit_stamps.apple.credentials import SigningCredentials
from passkit_stamps.apple.verify import ArchiveLimits, loads_lenient, verify_pkpass
from passkit_stamps.cli import main
from passkit_stamps.errors import CredentialsError, InvalidPassError, UnsafeArchiveError
from passkit_stamps.runtime.devpki import DevPKI, make_root, pem_certificate

from .conftest import APPLE_SAMPLES, PkpassFactory, pass_json, png, zip_files


def reasons_of(data: bytes, **kwargs: object) -> tuple[str, ...]:
    with pytest.raises(InvalidPassError) as err:
        verify_pkpass(data, **kwargs)  # type: ignore[arg-type]
    return err.value.reasons


def content(credentials: SigningCredentials, **overrides: object) -> dict[str, bytes]:
    return {
        "pass.json": json.dumps(pass_json(credentials, **overrides)).encode(),
        "icon.png": png(),
    }


# -- valid passes ---------------------------------------------------------------------------------


def test_valid_pass_with_chain(dev_pki: DevPKI, make_pkpass: PkpassFactory) -> None:
    verified = verify_pkpass(make_pkpass(), ca=dev_pki.root_cert.read_bytes())
    assert verified.chain_checked
    assert verified.pass_type_identifier == "pass.com.example.stamps"
    assert verified.team_identifier == "EXAMPLE123"
    assert verified.style == "storeCard"
    assert verified.digest_algorithm == "sha256"
    assert verified.signing_time is not None
    assert "UID=pass.com.example.stamps" in verified.signer_subject
    assert verified.files == ("icon.png", "icon@2x.png", "manifest.json", "pass.json", "signature")
    assert set(verified.manifest) == {"pass.json", "icon.png", "icon@2x.png"}
    assert verified.warnings == ()


def test_valid_pass_without_root_skips_the_chain(make_pkpass: PkpassFactory) -> None:
    assert not verify_pkpass(make_pkpass()).chain_checked


def test_deflated_pass_with_lproj_folder(
    credentials: SigningCredentials, make_pkpass: PkpassFactory
) -> None:
    files = {**content(credentials), "de.lproj/pass.strings": '"a" = "b";'.encode("utf-16")}
    verified = verify_pkpass(make_pkpass(files=files, compression=zipfile.ZIP_DEFLATED))
    assert "de.lproj/pass.strings" in verified.manifest


def test_bom_and_trailing_commas_are_tolerated_with_warnings(
    credentials: SigningCredentials, make_pkpass: PkpassFactory
) -> None:
    text = json.dumps(pass_json(credentials), indent=1).replace('"2/8"\n', '"2/8",\n', 1)
    assert '"2/8",' in text
    files = {"pass.json": codecs.BOM_UTF8 + text.encode(), "icon.png": png()}
    verified = verify_pkpass(make_pkpass(files=files))
    assert verified.pass_json["serialNumber"] == "SERIAL-1"
    assert any("byte order mark" in w for w in verified.warnings)
    assert any("trailing commas" in w for w in verified.warnings)


def test_lenient_json_keeps_commas_inside_strings() -> None:
    value, warnings = loads_lenient(b'{"a": ",]", "b": [1, 2, ], "c": "\\",}",}', "x.json")
    assert value == {"a": ",]", "b": [1, 2], "c": '",}'}
    assert warnings == ["x.json has trailing commas (tolerated by Wallet, not strict JSON)"]
    with pytest.raises(ValueError, match=r"x\.json is not valid JSON"):
        loads_lenient(b'{"a": }', "x.json")


# -- defects --------------------------------------------------------------------------------------


def test_tampered_file(credentials: SigningCredentials, make_pkpass: PkpassFactory) -> None:
    signed = zipfile.ZipFile(io.BytesIO(make_pkpass()))
    files = {name: signed.read(name) for name in signed.namelist()}
    files["pass.json"] = files["pass.json"].replace(b"2/8", b"8/8")
    assert reasons_of(zip_files(files)) == (
        "pass.json does not match its SHA-1 hash in manifest.json (changed)",
    )


def test_file_missing_from_the_archive(make_pkpass: PkpassFactory) -> None:
    assert reasons_of(make_pkpass(drop=("icon@2x.png",))) == (
        "manifest.json lists icon@2x.png but the archive does not contain it",
    )


def test_unlisted_extra_file(make_pkpass: PkpassFactory) -> None:
    reasons = reasons_of(make_pkpass(extra={".DS_Store": b"junk", "de.lproj/logo.png": png()}))
    assert reasons == (
        ".DS_Store is in the archive but not listed in manifest.json",
        "de.lproj/logo.png is in the archive but not listed in manifest.json",
    )


def test_bad_signature(make_pkpass: PkpassFactory, dev_pki: DevPKI) -> None:
    good = zipfile.ZipFile(io.BytesIO(make_pkpass()))
    signature = bytearray(good.read("signature"))
    signature[-5] ^= 0xFF
    reasons = reasons_of(make_pkpass(signature=bytes(signature)))
    assert reasons == (
        "signature does not verify with the signer certificate's key (wrong key or changed)",
    )


def test_signature_over_another_manifest(
    credentials: SigningCredentials, make_pkpass: PkpassFactory
) -> None:
    from passkit_stamps.apple.signing import sign_manifest

    other = sign_manifest(credentials, b"{}")
    assert reasons_of(make_pkpass(signature=other)) == (
        "signature was made over different bytes than manifest.json (message digest differs)",
    )


def test_pem_signature_instead_of_der(make_pkpass: PkpassFactory) -> None:
    der = zipfile.ZipFile(io.BytesIO(make_pkpass())).read("signature")
    import base64

    pem = b"-----BEGIN PKCS7-----\n" + base64.encodebytes(der) + b"-----END PKCS7-----\n"
    assert reasons_of(make_pkpass(signature=pem)) == (
        "signature is PEM text: Wallet needs it DER-encoded (binary)",
    )


def test_missing_signature_and_manifest(make_pkpass: PkpassFactory) -> None:
    reasons = reasons_of(make_pkpass(drop=("signature", "manifest.json")))
    assert reasons == (
        "no manifest.json: the pass is not signed (Wallet rejects it)",
        "no signature file: the pass is not signed (Wallet rejects it)",
    )


def test_missing_icon(credentials: SigningCredentials, make_pkpass: PkpassFactory) -> None:
    files = {"pass.json": content(credentials)["pass.json"], "logo.png": png()}
    assert reasons_of(make_pkpass(files=files)) == (
        "no icon.png: Wallet does not show a pass without an icon",
    )


def test_icon_that_is_not_a_png(
    credentials: SigningCredentials, make_pkpass: PkpassFactory
) -> None:
    files = {**content(credentials), "icon.png": b"GIF89a..."}
    assert reasons_of(make_pkpass(files=files)) == ("icon.png is not a PNG image",)


def test_missing_keys_and_style(
    credentials: SigningCredentials, make_pkpass: PkpassFactory
) -> None:
    files = content(credentials, serialNumber=None, description=None, storeCard=None)
    assert reasons_of(make_pkpass(files=files)) == (
        "pass.json lacks required key(s): serialNumber, description",
        "pass.json must have exactly one style key of boardingPass, coupon, eventTicket, "
        "generic, storeCard (found: none)",
    )
    two_styles = content(credentials, coupon={}, formatVersion=2)
    assert reasons_of(make_pkpass(files=two_styles)) == (
        "pass.json formatVersion is 2, must be 1",
        "pass.json must have exactly one style key of boardingPass, coupon, eventTicket, "
        "generic, storeCard (found: coupon, storeCard)",
    )


def test_duplicate_field_keys(credentials: SigningCredentials, make_pkpass: PkpassFactory) -> None:
    # Keys must be unique across the whole pass (Wallet refuses the pass otherwise).
    style = {
        "primaryFields": [{"key": "stamps", "value": "2/8"}],
        "backFields": [{"key": "terms", "value": "a"}, {"key": "stamps", "value": "b"}],
    }
    files = content(credentials, storeCard=style)
    assert reasons_of(make_pkpass(files=files)) == (
        "pass.json field key 'stamps' is used more than once: keys must be unique across the pass",
    )


@pytest.mark.parametrize(
    "value", ["2026-01-01", "2026-01-01T10:00:00", "tomorrow", "2026-13-01T10:00:00Z", 20260101]
)
def test_dates_need_a_w3c_date_time_with_zone(
    credentials: SigningCredentials, make_pkpass: PkpassFactory, value: object
) -> None:
    files = content(credentials, expirationDate=value)
    assert reasons_of(make_pkpass(files=files)) == (
        f"pass.json expirationDate {value!r} is not an ISO 8601 date and time with a time zone "
        "(e.g. 2026-05-01T18:00:00+02:00)",
    )


@pytest.mark.parametrize(
    "value", ["2012-07-22T14:25-08:00", "2026-01-01T10:00:00Z", "2026-01-01T10:00:00.5+00:00"]
)
def test_w3c_dates_are_valid(
    credentials: SigningCredentials, make_pkpass: PkpassFactory, value: str
) -> None:
    verify_pkpass(make_pkpass(files=content(credentials, relevantDate=value)))


def test_web_service_url_and_token(
    credentials: SigningCredentials, make_pkpass: PkpassFactory
) -> None:
    files = content(credentials, webServiceURL="https://x.example/v1/", authenticationToken="short")
    assert reasons_of(make_pkpass(files=files)) == (
        "pass.json webServiceURL 'https://x.example/v1/' ends in /v1: the device appends /v1/... "
        "itself",
        "pass.json authenticationToken must be a string of at least 16 characters",
    )


def test_identifiers_must_match_the_certificate(
    credentials: SigningCredentials, make_pkpass: PkpassFactory
) -> None:
    files = content(credentials, passTypeIdentifier="pass.com.other", teamIdentifier="OTHER")
    assert reasons_of(make_pkpass(files=files)) == (
        "pass.json passTypeIdentifier 'pass.com.other' does not match the signer certificate's "
        "UID 'pass.com.example.stamps'",
        "pass.json teamIdentifier 'OTHER' does not match the signer certificate's OU 'EXAMPLE123'",
    )


def test_every_reason_is_collected(
    credentials: SigningCredentials, make_pkpass: PkpassFactory
) -> None:
    files = {"pass.json": content(credentials, teamIdentifier="OTHER")["pass.json"]}
    reasons = reasons_of(make_pkpass(files=files, extra={"junk.txt": b"x"}))
    assert len(reasons) == 3
    assert [r.split(" ")[0] for r in reasons] == ["junk.txt", "pass.json", "no"]


def test_invalid_json(credentials: SigningCredentials, make_pkpass: PkpassFactory) -> None:
    files = {"pass.json": b'{"formatVersion": 1', "icon.png": png()}
    (reason,) = reasons_of(make_pkpass(files=files))
    assert reason.startswith("pass.json is not valid JSON")


def test_expired_chain_with_root(dev_pki: DevPKI, make_pkpass: PkpassFactory) -> None:
    end = dev_pki.credentials().certificate.not_valid_after_utc
    reasons = reasons_of(make_pkpass(), ca=dev_pki.root_cert.read_bytes(), now=end + timedelta(1))
    assert len(reasons) == 1 and reasons[0].startswith("certificate chain expired")


def test_unreadable_root_is_a_credentials_error(make_pkpass: PkpassFactory) -> None:
    with pytest.raises(CredentialsError, match="root CA given"):
        verify_pkpass(make_pkpass(), ca=b"not a certificate")


def test_chain_to_another_root(make_pkpass: PkpassFactory) -> None:
    other_root, _ = make_root()
    (reason,) = reasons_of(make_pkpass(), ca=pem_certificate(other_root))
    assert "does not lead to the given root CA" in reason


# -- unsafe or non-zip input ----------------------------------------------------------------------


def test_non_zip_input() -> None:
    (reason,) = reasons_of(b"hello, I am not a zip")
    assert reason.startswith("not a zip archive")
    (reason,) = reasons_of(b'{"formatVersion": 1}')
    assert "this looks like JSON" in reason


def test_oversized_input_is_refused_before_reading(make_pkpass: PkpassFactory) -> None:
    with pytest.raises(UnsafeArchiveError, match="more than the 10485760 allowed"):
        verify_pkpass(b"\0" * (10 * 1024 * 1024 + 1))
    with pytest.raises(UnsafeArchiveError, match="more than the 1000 allowed"):
        verify_pkpass(make_pkpass(), limits=ArchiveLimits(max_archive_bytes=1000))


def test_zip_bomb_is_refused() -> None:
    bomb = zip_files({"pass.json": b"\0" * (60 * 1024 * 1024)}, compression=zipfile.ZIP_DEFLATED)
    assert len(bomb) < 100_000
    with pytest.raises(UnsafeArchiveError, match="would unpack to"):
        verify_pkpass(bomb)
    small_bomb = zip_files({"strip.png": b"\0" * 5_000_000}, compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(UnsafeArchiveError, match="looks like a zip bomb"):
        verify_pkpass(small_bomb)


def test_too_many_entries() -> None:
    many = zip_files({f"f{i}.png": b"x" for i in range(101)})
    with pytest.raises(UnsafeArchiveError, match="101 entries, more than the 100 allowed"):
        verify_pkpass(many)


def _lie_about_size(archive: bytes, name: bytes, declared: int) -> bytes:
    """Rewrite the uncompressed size in both the local and the central header of ``name``."""
    data = bytearray(archive)
    local = data.index(b"PK\x03\x04")
    assert data[local + 30 : local + 30 + len(name)] == name
    struct.pack_into("<I", data, local + 22, declared)
    central = data.index(b"PK\x01\x02")
    assert data[central + 46 : central + 46 + len(name)] == name
    struct.pack_into("<I", data, central + 24, declared)
    return bytes(data)


def test_headers_that_lie_about_sizes_do_not_unpack_past_them() -> None:
    honest = zip_files({"strip.png": b"\0" * 3_000_000}, compression=zipfile.ZIP_DEFLATED)
    liar = _lie_about_size(honest, b"strip.png", 1000)  # ratio looks harmless now
    reasons = reasons_of(liar)
    assert any(r.startswith("strip.png cannot be read from the archive") for r in reasons)


# -- Apple's sample passes ------------------------------------------------------------------------

needs_samples = pytest.mark.skipif(
    not APPLE_SAMPLES.is_dir(), reason=f"Apple sample passes not found in {APPLE_SAMPLES}"
)
SAMPLES = ["BoardingPass", "Coupon", "Event", "Generic", "StoreCard"]


@needs_samples
@pytest.mark.parametrize("name", SAMPLES)
def test_apple_samples_verify_without_a_root(name: str) -> None:
    verified = verify_pkpass((APPLE_SAMPLES / f"{name}.pkpass").read_bytes())
    assert verified.digest_algorithm == "sha1"
    assert verified.pass_type_identifier == "pass.com.apple.devpubs.example"
    assert verified.team_identifier == "A93A5CM278"
    assert not verified.chain_checked
    assert verified.signing_time is not None and verified.signing_time.year == 2015
    assert any("expired on" in w for w in verified.warnings)


@needs_samples
def test_apple_sample_quirks_are_warnings() -> None:
    boarding = verify_pkpass((APPLE_SAMPLES / "BoardingPass.pkpass").read_bytes())
    assert any("trailing commas" in w for w in boarding.warnings)
    store = verify_pkpass((APPLE_SAMPLES / "StoreCard.pkpass").read_bytes())
    assert any("deprecated 'barcode'" in w for w in store.warnings)


@needs_samples
def test_apple_sample_chain_is_expired(dev_pki: DevPKI) -> None:
    data = (APPLE_SAMPLES / "Coupon.pkpass").read_bytes()
    reasons = reasons_of(data, ca=dev_pki.root_cert.read_bytes())
    assert sum(r.startswith("certificate chain expired") for r in reasons) == 2
    assert any("does not lead to the given root CA" in r for r in reasons)


@needs_samples
def test_unsigned_sample() -> None:
    assert reasons_of((APPLE_SAMPLES / "unsigned.pkpass").read_bytes()) == (
        "no manifest.json: the pass is not signed (Wallet rejects it)",
        "no signature file: the pass is not signed (Wallet rejects it)",
    )


# -- the command line -----------------------------------------------------------------------------


def test_cli_valid_pass(dev_pki: DevPKI, make_pkpass: PkpassFactory, tmp_path: Path) -> None:
    path = tmp_path / "card.pkpass"
    path.write_bytes(make_pkpass())
    result = CliRunner().invoke(main, ["verify", str(path), "--ca", str(dev_pki.root_cert)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"VALID {path}")
    assert "pass.com.example.stamps (team EXAMPLE123)" in result.output
    assert "checked against the given root CA" in result.output


def test_cli_invalid_pass_lists_every_reason(make_pkpass: PkpassFactory, tmp_path: Path) -> None:
    path = tmp_path / "card.pkpass"
    path.write_bytes(make_pkpass(drop=("icon.png",), extra={"junk": b"x"}))
    result = CliRunner().invoke(main, ["verify", str(path)])
    assert result.exit_code == 1
    assert f"INVALID {path} (2 reason(s)):" in result.output
    assert "  - manifest.json lists icon.png but the archive does not contain it" in result.output
    assert "  - junk is in the archive but not listed in manifest.json" in result.output


def test_cli_refuses_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.pkpass"
    path.write_bytes(b"\0" * (10 * 1024 * 1024 + 10))
    result = CliRunner().invoke(main, ["verify", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith(f"UNSAFE {path}")


@needs_samples
def test_cli_apple_sample(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["verify", str(APPLE_SAMPLES / "StoreCard.pkpass")])
    assert result.exit_code == 0, result.output
    assert "(SHA1)" in result.output and "not checked (give --ca ROOT.pem)" in result.output
