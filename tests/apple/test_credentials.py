"""Loading signing credentials: every mistake a user makes gets its own error naming the file."""

from __future__ import annotations

import os
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from passkit_stamps.apple.credentials import PASS_TYPE_ID_EXTENSION, SigningCredentials
from passkit_stamps.errors import (
    CertificateExpiredError,
    CredentialsError,
    KeyMismatchError,
    NotPassTypeCertificateError,
    WrongPasswordError,
    WWDRCertificateError,
)
from passkit_stamps.runtime.devpki import (
    DevPKI,
    make_dev_pki,
    make_pass_certificate,
    make_root,
    make_wwdr,
    p12_bytes,
    pem_certificate,
    pem_key,
)

from .conftest import requires_openssl

NOW = datetime.now(UTC)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def issue(dev_pki: DevPKI, **kwargs: object) -> tuple[x509.Certificate, object]:
    wwdr_cert, wwdr_key = dev_pki.load_wwdr()
    return make_pass_certificate(wwdr_cert, wwdr_key, **kwargs)  # type: ignore[arg-type]


# -- the development PKI -----------------------------------------------------------------------


def test_dev_pki_credentials_carry_identifiers_from_the_certificate(dev_pki: DevPKI) -> None:
    credentials = dev_pki.credentials()
    assert credentials.pass_type_identifier == "pass.com.example.stamps"
    assert credentials.team_identifier == "EXAMPLE123"
    assert credentials.warnings == ()
    subject = credentials.certificate.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "Pass Type ID: pass.com.example.stamps"
    )
    ext = credentials.certificate.extensions.get_extension_for_oid(PASS_TYPE_ID_EXTENSION)
    assert ext.value.value.endswith(b"pass.com.example.stamps")  # type: ignore[attr-defined]
    wwdr = credentials.wwdr.subject
    assert wwdr.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "G4"
    assert credentials.expires_at <= credentials.certificate.not_valid_after_utc


def test_dev_pki_reuses_valid_files_and_replaces_broken_ones(tmp_path: Path) -> None:
    first = make_dev_pki(tmp_path, p12_password="secret")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    second = make_dev_pki(tmp_path, p12_password="secret")
    assert second == first
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    first.signer_key.write_bytes(b"broken")
    third = make_dev_pki(tmp_path, p12_password="secret")
    assert third.signer_cert.read_bytes() != before["pass.pem"]
    third.credentials()  # a complete, consistent new set


def test_dev_pki_keys_are_private_to_the_owner(dev_pki: DevPKI) -> None:
    for path in (dev_pki.signer_key, dev_pki.signer_p12, dev_pki.root_key, dev_pki.wwdr_key):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


# -- .p12 files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["dev-password", b"dev-password"])
def test_p12_with_password_from_path_and_bytes(dev_pki: DevPKI, password: str | bytes) -> None:
    from_path = SigningCredentials.from_p12(
        dev_pki.signer_p12, password=password, wwdr=dev_pki.wwdr_cert
    )
    from_bytes = SigningCredentials.from_p12(
        dev_pki.signer_p12.read_bytes(), password=password, wwdr=dev_pki.wwdr_cert.read_bytes()
    )
    assert from_path.certificate == from_bytes.certificate == dev_pki.credentials().certificate
    assert from_path.pass_type_identifier == "pass.com.example.stamps"


def test_p12_without_password(dev_pki: DevPKI) -> None:
    certificate, key = issue(dev_pki)
    data = p12_bytes(certificate, key, None)  # type: ignore[arg-type]
    credentials = SigningCredentials.from_p12(data, wwdr=dev_pki.wwdr_cert)
    assert credentials.certificate == certificate


def test_legacy_p12_like_older_keychain_exports_loads(dev_pki: DevPKI) -> None:
    certificate, key = issue(dev_pki)
    data = p12_bytes(certificate, key, "old", legacy=True)  # type: ignore[arg-type]
    assert SigningCredentials.from_p12(data, password="old", wwdr=dev_pki.wwdr_cert)


@requires_openssl
def test_rc2_p12_made_by_openssl_legacy_export(dev_pki: DevPKI, tmp_path: Path) -> None:
    """Older Keychain exports use RC2-40 for the certificate bag, as this openssl call does."""
    p12 = tmp_path / "rc2.p12"
    command = ["openssl", "pkcs12", "-export", "-legacy", "-certpbe", "PBE-SHA1-RC2-40"]
    command += ["-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1", "-passout", "pass:pw"]
    command += ["-in", str(dev_pki.signer_cert), "-inkey", str(dev_pki.signer_key)]
    result = subprocess.run([*command, "-out", str(p12)], capture_output=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"this openssl cannot write RC2 .p12 files: {result.stderr[-200:]!r}")
    loaded = SigningCredentials.from_p12(p12, password="pw", wwdr=dev_pki.wwdr_cert)
    assert loaded.certificate == dev_pki.credentials().certificate
    with pytest.raises(WrongPasswordError, match="password is wrong"):
        SigningCredentials.from_p12(p12, password="wrong", wwdr=dev_pki.wwdr_cert)


def test_wrong_p12_password(dev_pki: DevPKI) -> None:
    with pytest.raises(WrongPasswordError) as err:
        SigningCredentials.from_p12(dev_pki.signer_p12, password="nope", wwdr=dev_pki.wwdr_cert)
    assert str(dev_pki.signer_p12) in str(err.value)
    assert "password is wrong" in str(err.value)


def test_p12_password_missing(dev_pki: DevPKI) -> None:
    with pytest.raises(WrongPasswordError, match="password-protected: pass its password"):
        SigningCredentials.from_p12(dev_pki.signer_p12, wwdr=dev_pki.wwdr_cert)


def test_garbage_p12_is_not_a_password_problem(dev_pki: DevPKI) -> None:
    with pytest.raises(CredentialsError) as err:
        SigningCredentials.from_p12(b"\x00garbage" * 50, password="x", wwdr=dev_pki.wwdr_cert)
    assert not isinstance(err.value, WrongPasswordError)
    assert "<bytes>" in str(err.value)
    assert "not a PKCS#12" in str(err.value)


def test_missing_file_is_named(dev_pki: DevPKI, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.p12"
    with pytest.raises(CredentialsError, match=r"nowhere\.p12 does not exist"):
        SigningCredentials.from_p12(missing, password="x", wwdr=dev_pki.wwdr_cert)
    with pytest.raises(CredentialsError, match=r"WWDR certificate .*AppleWWDRCAG4\.cer"):
        SigningCredentials.from_p12(
            dev_pki.signer_p12, password="dev-password", wwdr=tmp_path / "AppleWWDRCAG4.cer"
        )


def test_p12_without_key_or_without_certificate(dev_pki: DevPKI) -> None:
    certificate, key = issue(dev_pki)
    only_cert = pkcs12.serialize_key_and_certificates(
        b"x", None, certificate, None, serialization.BestAvailableEncryption(b"pw")
    )
    with pytest.raises(CredentialsError, match=r"<bytes> holds no private key"):
        SigningCredentials.from_p12(only_cert, password="pw", wwdr=dev_pki.wwdr_cert)
    only_key = pkcs12.serialize_key_and_certificates(
        b"x",
        key,
        None,
        None,
        serialization.BestAvailableEncryption(b"pw"),  # type: ignore[arg-type]
    )
    with pytest.raises(CredentialsError, match=r"<bytes> holds no certificate"):
        SigningCredentials.from_p12(only_key, password="pw", wwdr=dev_pki.wwdr_cert)


# -- PEM / DER ------------------------------------------------------------------------------------


def test_der_certificate_and_der_wwdr(dev_pki: DevPKI, tmp_path: Path) -> None:
    credentials = dev_pki.credentials()
    cer = write(
        tmp_path / "pass.cer", credentials.certificate.public_bytes(serialization.Encoding.DER)
    )
    wwdr = write(tmp_path / "wwdr.cer", credentials.wwdr.public_bytes(serialization.Encoding.DER))
    loaded = SigningCredentials.from_pem(cer, dev_pki.signer_key, wwdr=wwdr)
    assert loaded.certificate == credentials.certificate
    assert loaded.wwdr == credentials.wwdr


def test_pem_text_given_as_str(dev_pki: DevPKI) -> None:
    loaded = SigningCredentials.from_pem(
        dev_pki.signer_cert.read_text(),
        dev_pki.signer_key.read_text(),
        wwdr=dev_pki.wwdr_cert.read_text(),
    )
    assert loaded.pass_type_identifier == "pass.com.example.stamps"


def test_encrypted_pem_key(dev_pki: DevPKI, tmp_path: Path) -> None:
    certificate, key = issue(dev_pki)
    cert_path = write(tmp_path / "c.pem", pem_certificate(certificate))
    key_path = write(tmp_path / "k.pem", pem_key(key, "s3cret"))  # type: ignore[arg-type]

    loaded = SigningCredentials.from_pem(
        cert_path, key_path, key_password="s3cret", wwdr=dev_pki.wwdr_cert
    )
    assert loaded.certificate == certificate
    with pytest.raises(WrongPasswordError, match=r"k\.pem is encrypted: pass its password"):
        SigningCredentials.from_pem(cert_path, key_path, wwdr=dev_pki.wwdr_cert)
    with pytest.raises(WrongPasswordError, match=r"k\.pem could not be decrypted"):
        SigningCredentials.from_pem(
            cert_path, key_path, key_password="wrong", wwdr=dev_pki.wwdr_cert
        )


def test_certificate_and_key_in_one_pem_file(dev_pki: DevPKI, tmp_path: Path) -> None:
    both = write(
        tmp_path / "both.pem", dev_pki.signer_cert.read_bytes() + dev_pki.signer_key.read_bytes()
    )
    loaded = SigningCredentials.from_pem(both, both, wwdr=dev_pki.wwdr_cert)
    assert loaded.certificate == dev_pki.credentials().certificate


def test_password_for_an_unencrypted_key_is_ignored(dev_pki: DevPKI) -> None:
    loaded = SigningCredentials.from_pem(
        dev_pki.signer_cert, dev_pki.signer_key, key_password="unused", wwdr=dev_pki.wwdr_cert
    )
    assert loaded.team_identifier == "EXAMPLE123"


def test_key_of_another_certificate(dev_pki: DevPKI, tmp_path: Path) -> None:
    _, other_key = issue(dev_pki)
    key_path = write(tmp_path / "other.key.pem", pem_key(other_key))  # type: ignore[arg-type]
    with pytest.raises(KeyMismatchError) as err:
        SigningCredentials.from_pem(dev_pki.signer_cert, key_path, wwdr=dev_pki.wwdr_cert)
    message = str(err.value)
    assert "other.key.pem" in message and str(dev_pki.signer_cert) in message
    assert "CSR" in message


def test_garbage_certificate_and_key(dev_pki: DevPKI, tmp_path: Path) -> None:
    junk = write(tmp_path / "junk.pem", b"this is not a certificate")
    with pytest.raises(CredentialsError, match=r"certificate .*junk\.pem is not a readable"):
        SigningCredentials.from_pem(junk, dev_pki.signer_key, wwdr=dev_pki.wwdr_cert)
    with pytest.raises(CredentialsError, match=r"private key .*junk\.pem is not a readable key"):
        SigningCredentials.from_pem(dev_pki.signer_cert, junk, wwdr=dev_pki.wwdr_cert)
    with pytest.raises(CredentialsError, match="looks like a certificate, not a private key"):
        SigningCredentials.from_pem(
            dev_pki.signer_cert, dev_pki.signer_cert, wwdr=dev_pki.wwdr_cert
        )
    with pytest.raises(CredentialsError, match="WWDR certificate <bytes> is not a readable"):
        SigningCredentials.from_pem(dev_pki.signer_cert, dev_pki.signer_key, wwdr=b"\x30\x03junk")


# -- not a Pass Type ID certificate -------------------------------------------------------------


def test_not_a_pass_type_certificate(dev_pki: DevPKI) -> None:
    certificate, key = issue(dev_pki, pass_type=False)
    with pytest.raises(NotPassTypeCertificateError, match="not a Pass Type ID certificate"):
        SigningCredentials.from_p12(
            p12_bytes(certificate, key, "pw"),  # type: ignore[arg-type]
            password="pw",
            wwdr=dev_pki.wwdr_cert,
        )


def test_wwdr_given_as_the_signer(dev_pki: DevPKI) -> None:
    wwdr_cert, wwdr_key = dev_pki.load_wwdr()
    with pytest.raises(NotPassTypeCertificateError, match="is a certificate authority"):
        SigningCredentials.from_objects(wwdr_cert, wwdr_key, dev_pki.wwdr_cert)


def _custom_certificate(
    dev_pki: DevPKI, subject: list[tuple[x509.ObjectIdentifier, str]], *, extension: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    wwdr_cert, wwdr_key = dev_pki.load_wwdr()
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(o, v) for o, v in subject]))
        .issuer_name(wwdr_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=100))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(wwdr_key.public_key()), False
        )
    )
    if extension:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(PASS_TYPE_ID_EXTENSION, b"\x0c\x06pass.x"), False
        )
    return builder.sign(wwdr_key, hashes.SHA256()), key


def test_pass_type_recognised_by_extension_or_by_common_name(dev_pki: DevPKI) -> None:
    by_extension = _custom_certificate(
        dev_pki,
        [
            (NameOID.USER_ID, "pass.x"),
            (NameOID.COMMON_NAME, "dev"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "T1"),
        ],
        extension=True,
    )
    by_name = _custom_certificate(
        dev_pki,
        [
            (NameOID.USER_ID, "pass.y"),
            (NameOID.COMMON_NAME, "Pass Type ID with NFC: pass.y"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "T2"),
        ],
        extension=False,
    )
    loaded = [
        SigningCredentials.from_objects(c, k, dev_pki.wwdr_cert) for c, k in (by_extension, by_name)
    ]
    assert [(c.pass_type_identifier, c.team_identifier) for c in loaded] == [
        ("pass.x", "T1"),
        ("pass.y", "T2"),
    ]


def test_pass_type_certificate_needs_uid_and_team(dev_pki: DevPKI) -> None:
    no_uid = _custom_certificate(
        dev_pki,
        [(NameOID.COMMON_NAME, "Pass Type ID: pass.z"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "T")],
        extension=True,
    )
    with pytest.raises(NotPassTypeCertificateError, match=r"no UID starting with 'pass\.'"):
        SigningCredentials.from_objects(*no_uid, dev_pki.wwdr_cert)
    no_team = _custom_certificate(
        dev_pki, [(NameOID.USER_ID, "pass.z"), (NameOID.COMMON_NAME, "x")], extension=True
    )
    with pytest.raises(NotPassTypeCertificateError, match="no OU"):
        SigningCredentials.from_objects(*no_team, dev_pki.wwdr_cert)


# -- validity --------------------------------------------------------------------------------------


def test_expired_signer(dev_pki: DevPKI) -> None:
    certificate, key = issue(dev_pki, not_before=NOW - timedelta(days=400), days=365)
    with pytest.raises(CertificateExpiredError, match=r"expired on .*developer portal"):
        SigningCredentials.from_objects(certificate, key, dev_pki.wwdr_cert)  # type: ignore[arg-type]


def test_signer_not_yet_valid(dev_pki: DevPKI) -> None:
    certificate, key = issue(dev_pki, not_before=NOW + timedelta(days=2))
    with pytest.raises(CertificateExpiredError, match=r"not yet valid.*system clock"):
        SigningCredentials.from_objects(certificate, key, dev_pki.wwdr_cert)  # type: ignore[arg-type]


def test_expiry_checked_at_the_given_time(dev_pki: DevPKI) -> None:
    credentials = dev_pki.credentials()
    later = credentials.certificate.not_valid_after_utc + timedelta(days=1)
    with pytest.raises(CertificateExpiredError):
        dev_pki.credentials(now=later)


def test_warning_within_30_days_of_expiry(dev_pki: DevPKI) -> None:
    end = dev_pki.credentials().certificate.not_valid_after_utc
    soon = dev_pki.credentials(now=end - timedelta(days=10))
    assert len(soon.warnings) == 1
    assert "expires on" in soon.warnings[0] and "in 10 days" in soon.warnings[0]


# -- the WWDR intermediate ------------------------------------------------------------------------


def test_wwdr_that_did_not_issue_the_signer(dev_pki: DevPKI, tmp_path: Path) -> None:
    other_root, other_root_key = make_root()
    other_wwdr, _ = make_wwdr(other_root, other_root_key)  # same name, different key
    path = write(tmp_path / "AppleWWDRCA.cer", other_wwdr.public_bytes(serialization.Encoding.DER))
    with pytest.raises(WWDRCertificateError) as err:
        SigningCredentials.from_pem(dev_pki.signer_cert, dev_pki.signer_key, wwdr=path)
    message = str(err.value)
    assert "AppleWWDRCA.cer" in message and "did not issue the signer" in message
    assert "G4" in message and "2023-02-07" in message


def test_expired_wwdr_names_the_g1_expiry(dev_pki: DevPKI) -> None:
    root_cert, root_key = dev_pki.load_root()
    old_wwdr, old_key = make_wwdr(
        root_cert,
        root_key,
        organizational_unit="G1",
        not_before=NOW - timedelta(days=3000),
        days=2000,
    )
    certificate, key = make_pass_certificate(old_wwdr, old_key)
    with pytest.raises(WWDRCertificateError) as err:
        SigningCredentials.from_objects(certificate, key, pem_certificate(old_wwdr))
    message = str(err.value)
    assert "<bytes>" in message and "expired on" in message
    assert "G1 intermediate expired 2023-02-07" in message and "G4" in message


def test_wwdr_bundle_picks_the_issuer(dev_pki: DevPKI) -> None:
    other_root, other_root_key = make_root()
    other_wwdr, _ = make_wwdr(other_root, other_root_key)
    bundle = pem_certificate(other_wwdr) + dev_pki.wwdr_cert.read_bytes()
    loaded = SigningCredentials.from_pem(dev_pki.signer_cert, dev_pki.signer_key, wwdr=bundle)
    assert loaded.wwdr == dev_pki.credentials().wwdr


# -- SigningCredentials.load: the one entry point for configuration --------------------------------


def test_load_picks_p12_or_pem(dev_pki) -> None:  # type: ignore[no-untyped-def]
    from_p12 = SigningCredentials.load(
        p12=dev_pki.signer_p12, p12_password=dev_pki.p12_password, wwdr=dev_pki.wwdr_cert
    )
    from_pem = SigningCredentials.load(
        certificate=dev_pki.signer_cert, key=dev_pki.signer_key, wwdr=dev_pki.wwdr_cert
    )
    assert from_p12.certificate == from_pem.certificate
    assert from_p12.pass_type_identifier == "pass.com.example.stamps"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"p12": "x"}, "wwdr is required"),
        ({"wwdr": "w"}, "signing needs a .p12"),
        ({"certificate": "c", "wwdr": "w"}, "signing needs a .p12"),
        ({"p12": "x", "key": "k", "wwdr": "w"}, "not both"),
        ({"p12": "x", "key_password": "pw", "wwdr": "w"}, "key password goes with"),
        ({"certificate": "c", "key": "k", "p12_password": "pw", "wwdr": "w"}, ".p12 password"),
    ],
)
def test_load_refuses_incomplete_or_mixed_options(options: dict[str, str], reason: str) -> None:
    with pytest.raises(CredentialsError, match=reason):
        SigningCredentials.load(**options)  # type: ignore[arg-type]
