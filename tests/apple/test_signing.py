"""The manifest signature: checked with the real openssl command line and in-process."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7

from passkit_stamps.apple.credentials import SigningCredentials
from passkit_stamps.apple.signing import sign_manifest
from passkit_stamps.apple.verify import check_signature
from passkit_stamps.runtime.devpki import DevPKI, make_pass_certificate

from .conftest import requires_openssl

MANIFEST = b'{\n  "icon.png": "0296b01347b3173e98438a003b0e88986340b2d8",\n  "pass.json": "ab"\n}\n'


def openssl_verify(
    tmp_path: Path, signature: bytes, manifest: bytes, root: Path | None
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "signature").write_bytes(signature)
    (tmp_path / "manifest.json").write_bytes(manifest)
    command = ["openssl", "cms", "-verify", "-binary", "-inform", "DER"]
    command += ["-in", str(tmp_path / "signature"), "-content", str(tmp_path / "manifest.json")]
    command += ["-out", str(tmp_path / "out")]
    command += ["-CAfile", str(root), "-purpose", "any"] if root else ["-noverify"]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


@requires_openssl
def test_openssl_verifies_signature_and_chain_to_the_dev_root(
    dev_pki: DevPKI, credentials: SigningCredentials, tmp_path: Path
) -> None:
    signature = sign_manifest(credentials, MANIFEST)
    result = openssl_verify(tmp_path, signature, MANIFEST, dev_pki.root_cert)
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr
    assert (tmp_path / "out").read_bytes() == MANIFEST  # exact bytes, no newline rewriting


@requires_openssl
def test_openssl_noverify_checks_the_signature_alone(
    credentials: SigningCredentials, tmp_path: Path
) -> None:
    signature = sign_manifest(credentials, MANIFEST)
    assert openssl_verify(tmp_path, signature, MANIFEST, None).returncode == 0


@requires_openssl
def test_tampered_manifest_fails_openssl_and_in_process(
    dev_pki: DevPKI, credentials: SigningCredentials, tmp_path: Path
) -> None:
    signature = sign_manifest(credentials, MANIFEST)
    tampered = MANIFEST.replace(b'"ab"', b'"ac"')
    assert openssl_verify(tmp_path, signature, tampered, dev_pki.root_cert).returncode != 0
    assert openssl_verify(tmp_path, signature, tampered, None).returncode != 0
    check = check_signature(signature, tampered, ca=dev_pki.root_cert.read_bytes())
    assert check.reasons == (
        "signature was made over different bytes than manifest.json (message digest differs)",
    )


@requires_openssl
def test_openssl_refuses_a_chain_to_another_root(
    credentials: SigningCredentials, tmp_path: Path
) -> None:
    from passkit_stamps.runtime.devpki import make_root, pem_certificate

    other_root, _ = make_root()
    root = tmp_path / "other-root.pem"
    root.write_bytes(pem_certificate(other_root))
    signature = sign_manifest(credentials, MANIFEST)
    assert openssl_verify(tmp_path, signature, MANIFEST, root).returncode != 0
    check = check_signature(signature, MANIFEST, ca=other_root)
    assert len(check.reasons) == 1 and "does not lead to the given root CA" in check.reasons[0]


def test_in_process_check_with_chain(dev_pki: DevPKI, credentials: SigningCredentials) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    signature = sign_manifest(credentials, MANIFEST, signing_time=when)
    check = check_signature(signature, MANIFEST, ca=dev_pki.root_cert.read_bytes())
    assert check.ok, check.reasons
    assert check.chain_checked
    assert check.digest_algorithm == "sha256"
    assert check.signing_time == when.replace(microsecond=0)
    assert check.signer == credentials.certificate
    assert set(check.certificates) == {credentials.certificate, credentials.wwdr}


def test_structure_is_what_wallet_expects(credentials: SigningCredentials) -> None:
    info = asn1_cms.ContentInfo.load(sign_manifest(credentials, MANIFEST), strict=True)
    signed_data = info["content"]
    assert info["content_type"].native == "signed_data"
    assert signed_data["encap_content_info"]["content"].native is None  # detached
    signer_info = signed_data["signer_infos"][0]
    assert signer_info["digest_algorithm"]["algorithm"].native == "sha256"
    kinds = [a["type"].native for a in signer_info["signed_attrs"]]
    assert kinds == ["content_type", "signing_time", "message_digest"]  # DER set order


def test_fixed_signing_time_gives_identical_bytes(credentials: SigningCredentials) -> None:
    when = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    first = sign_manifest(credentials, MANIFEST, signing_time=when)
    assert sign_manifest(credentials, MANIFEST, signing_time=when) == first
    assert sign_manifest(credentials, MANIFEST, signing_time=when + timedelta(seconds=1)) != first


def test_naive_signing_time_is_refused(credentials: SigningCredentials) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sign_manifest(credentials, MANIFEST, signing_time=datetime(2030, 1, 1))


@requires_openssl
def test_signing_time_after_2049_uses_generalized_time(
    credentials: SigningCredentials, tmp_path: Path
) -> None:
    when = datetime(2051, 1, 1, tzinfo=UTC)
    signature = sign_manifest(credentials, MANIFEST, signing_time=when)
    assert openssl_verify(tmp_path, signature, MANIFEST, None).returncode == 0
    assert check_signature(signature, MANIFEST).signing_time == when


@requires_openssl
def test_ec_key_signs_too(dev_pki: DevPKI, tmp_path: Path) -> None:
    wwdr_cert, wwdr_key = dev_pki.load_wwdr()
    certificate, key = make_pass_certificate(
        wwdr_cert, wwdr_key, key=ec.generate_private_key(ec.SECP256R1())
    )
    credentials = SigningCredentials.from_objects(certificate, key, wwdr_cert)
    signature = sign_manifest(credentials, MANIFEST)
    assert openssl_verify(tmp_path, signature, MANIFEST, dev_pki.root_cert).returncode == 0
    assert check_signature(signature, MANIFEST, ca=dev_pki.root_cert.read_bytes()).ok


def test_cryptography_builder_signatures_verify_in_process(
    credentials: SigningCredentials,
) -> None:
    """Cross-check the verifier against the other implementation, and show the text-mode trap."""
    builder = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(MANIFEST)
        .add_signer(credentials.certificate, credentials.private_key, hashes.SHA256())
        .add_certificate(credentials.wwdr)
    )
    binary = builder.sign(
        serialization.Encoding.DER,
        [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
    )
    assert check_signature(binary, MANIFEST).ok
    text_mode = builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature])
    assert "message digest differs" in check_signature(text_mode, MANIFEST).reasons[0]
    no_attributes = builder.sign(
        serialization.Encoding.DER,
        [
            pkcs7.PKCS7Options.DetachedSignature,
            pkcs7.PKCS7Options.Binary,
            pkcs7.PKCS7Options.NoAttributes,
        ],
    )
    assert check_signature(no_attributes, MANIFEST).reasons == (
        "signature has no signed attributes (no signingTime): Wallet rejects it",
    )


def test_signature_by_another_key_is_reported(
    dev_pki: DevPKI, credentials: SigningCredentials
) -> None:
    signature = bytearray(sign_manifest(credentials, MANIFEST))
    signature[-5] ^= 0xFF  # inside the RSA signature value, the last field
    check = check_signature(bytes(signature), MANIFEST)
    assert check.reasons == (
        "signature does not verify with the signer certificate's key (wrong key or changed)",
    )


def test_garbage_and_pem_signatures(credentials: SigningCredentials) -> None:
    assert "not a DER PKCS#7" in check_signature(b"\x30\x80garbage", MANIFEST).reasons[0]
    der = sign_manifest(credentials, MANIFEST)
    pem = pkcs7.serialize_certificates([credentials.certificate], serialization.Encoding.PEM)
    assert check_signature(pem, MANIFEST).reasons == (
        "signature is PEM text: Wallet needs it DER-encoded (binary)",
    )
    assert check_signature(der, MANIFEST).ok


def test_expired_chain_is_a_reason_only_with_a_root(
    dev_pki: DevPKI, credentials: SigningCredentials
) -> None:
    signature = sign_manifest(credentials, MANIFEST)
    later = credentials.certificate.not_valid_after_utc + timedelta(days=1)
    with_root = check_signature(signature, MANIFEST, ca=dev_pki.root_cert.read_bytes(), now=later)
    assert len(with_root.reasons) == 1
    assert with_root.reasons[0].startswith("certificate chain expired: signer certificate")
    without_root = check_signature(signature, MANIFEST, now=later)
    assert without_root.ok
    assert "expired on" in without_root.warnings[0]
