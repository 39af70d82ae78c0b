"""A complete development PKI, so passes can be built and checked without Apple's certificates.

It makes a fake root CA, a fake "Apple Worldwide Developer Relations Certification Authority"
intermediate (OU=G4) and a Pass Type ID certificate for ``pass.com.example.stamps`` shaped like
Apple's (UID, CN, OU, O and Apple's pass type extension). Wallet will not open passes signed with
it (its root is not Apple's), but every check of this library and ``openssl cms -verify`` against
the fake root do. The lower-level ``make_*`` functions also make deliberately bad certificates
(expired, not a pass type, from another intermediate) for tests.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..apple.credentials import PASS_TYPE_ID_EXTENSION, PrivateKey, SigningCredentials
from ..errors import CredentialsError

__all__ = [
    "DEV_PASS_TYPE_IDENTIFIER",
    "DEV_TEAM_IDENTIFIER",
    "DevPKI",
    "make_dev_pki",
    "make_pass_certificate",
    "make_root",
    "make_tls_server_certificate",
    "make_wwdr",
    "new_key",
    "p12_bytes",
    "pem_certificate",
    "pem_key",
]

DEV_PASS_TYPE_IDENTIFIER = "pass.com.example.stamps"
DEV_TEAM_IDENTIFIER = "EXAMPLE123"
WWDR_COMMON_NAME = "Apple Worldwide Developer Relations Certification Authority"

_APPLE_PASS_SIGNING_EKU = x509.ObjectIdentifier("1.2.840.113635.100.4.14")
_RENEW_BEFORE = timedelta(days=30)  # regenerate reused files before they would warn

# File names inside out_dir (all ignored by git: certs.example/dev/, *.pem, *.p12).
ROOT_CERT, ROOT_KEY = "root-ca.pem", "root-ca.key.pem"
WWDR_CERT, WWDR_KEY = "wwdr.pem", "wwdr.key.pem"
SIGNER_CERT, SIGNER_KEY, SIGNER_P12 = "pass.pem", "pass.key.pem", "pass.p12"


def _now() -> datetime:
    return datetime.now(UTC)


def new_key() -> rsa.RSAPrivateKey:
    """A new RSA 2048 key, the kind Apple issues Pass Type ID certificates for."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def _serial() -> int:
    return x509.random_serial_number()


def make_root(
    *,
    key: rsa.RSAPrivateKey | None = None,
    common_name: str = "passkit_stamps Development Root CA (not Apple)",
    not_before: datetime | None = None,
    days: int = 3650,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed root CA standing in for the Apple Root CA."""
    key = key or new_key()
    start = not_before or _now() - timedelta(days=1)
    name = _name(
        (NameOID.COMMON_NAME, common_name),
        (NameOID.ORGANIZATION_NAME, "passkit_stamps development"),
        (NameOID.COUNTRY_NAME, "US"),
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def make_wwdr(
    root_cert: x509.Certificate,
    root_key: rsa.RSAPrivateKey,
    *,
    key: rsa.RSAPrivateKey | None = None,
    organizational_unit: str = "G4",
    not_before: datetime | None = None,
    days: int = 3650,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A fake "Apple Worldwide Developer Relations Certification Authority" intermediate.

    ``organizational_unit="G1"`` with a past ``not_before`` and small ``days`` imitates the
    expired G1 intermediate.
    """
    key = key or new_key()
    start = not_before or _now() - timedelta(days=1)
    subject = _name(
        (NameOID.COMMON_NAME, WWDR_COMMON_NAME),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit),
        (NameOID.ORGANIZATION_NAME, "Apple Inc."),
        (NameOID.COUNTRY_NAME, "US"),
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    return certificate, key


def make_pass_certificate(
    wwdr_cert: x509.Certificate,
    wwdr_key: rsa.RSAPrivateKey,
    *,
    key: PrivateKey | None = None,
    pass_type_identifier: str = DEV_PASS_TYPE_IDENTIFIER,
    team_identifier: str = DEV_TEAM_IDENTIFIER,
    organization: str = "Example Stamps Inc.",
    pass_type: bool = True,
    not_before: datetime | None = None,
    days: int = 365,
) -> tuple[x509.Certificate, PrivateKey]:
    """A Pass Type ID certificate issued by ``wwdr_cert``, shaped like Apple's (RSA by default).

    ``pass_type=False`` makes an ordinary certificate instead (CN without "Pass Type ID:", no UID,
    no Apple extension), for tests of the "not a Pass Type ID certificate" error. Use a past
    ``not_before`` and small ``days`` for an expired certificate, a future one for "not yet valid".
    """
    key = key or new_key()
    start = not_before or _now() - timedelta(days=1)
    if pass_type:
        subject = _name(
            (NameOID.USER_ID, pass_type_identifier),
            (NameOID.COMMON_NAME, f"Pass Type ID: {pass_type_identifier}"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, team_identifier),
            (NameOID.ORGANIZATION_NAME, organization),
            (NameOID.COUNTRY_NAME, "US"),
        )
    else:
        subject = _name(
            (NameOID.COMMON_NAME, "Apple Development: someone@example.com"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, team_identifier),
            (NameOID.ORGANIZATION_NAME, organization),
            (NameOID.COUNTRY_NAME, "US"),
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(wwdr_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, _APPLE_PASS_SIGNING_EKU]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(wwdr_key.public_key()),
            critical=False,
        )
    )
    if pass_type:
        # Apple's extension carries the pass type id as a DER UTF8String.
        value = pass_type_identifier.encode("utf-8")
        if len(value) > 127:
            raise ValueError("pass type identifier too long for the development PKI")
        der = b"\x0c" + bytes([len(value)]) + value
        builder = builder.add_extension(
            x509.UnrecognizedExtension(PASS_TYPE_ID_EXTENSION, der), critical=False
        )
    return builder.sign(wwdr_key, hashes.SHA256()), key


def pem_certificate(*certificates: x509.Certificate) -> bytes:
    """Certificates as PEM bytes."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def pem_key(key: PrivateKey, password: str | bytes | None = None) -> bytes:
    """A private key as PKCS#8 PEM bytes, encrypted when a password is given."""
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if password:
        secret = password.encode("utf-8") if isinstance(password, str) else password
        encryption = serialization.BestAvailableEncryption(secret)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def p12_bytes(
    certificate: x509.Certificate,
    key: PrivateKey,
    password: str | bytes | None,
    *,
    legacy: bool = False,
    cas: Sequence[x509.Certificate] = (),
) -> bytes:
    """A .p12 of certificate + key; ``legacy=True`` uses 3DES/SHA-1 like older Keychain exports."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    encryption: serialization.KeySerializationEncryption
    if not secret:
        encryption = serialization.NoEncryption()
    elif legacy:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
            .build(secret)
        )
    else:
        encryption = serialization.BestAvailableEncryption(secret)
    return pkcs12.serialize_key_and_certificates(
        b"Pass Type ID", key, certificate, list(cas) or None, encryption
    )


@dataclass(frozen=True)
class DevPKI:
    """Paths of the development PKI's files (PEM, except the .p12) and its identifiers."""

    root_cert: Path
    wwdr_cert: Path
    signer_cert: Path
    signer_key: Path
    signer_p12: Path
    p12_password: str
    pass_type_identifier: str
    team_identifier: str
    root_key: Path  # the CA keys let tests issue more (bad) certificates
    wwdr_key: Path

    def credentials(self, *, now: datetime | None = None) -> SigningCredentials:
        """Checked signing credentials from the PEM certificate and key."""
        return SigningCredentials.from_pem(
            self.signer_cert, self.signer_key, wwdr=self.wwdr_cert, now=now
        )

    def load_root(self) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        """The root CA's certificate and key (for issuing test certificates)."""
        return _load_pair(self.root_cert, self.root_key)

    def load_wwdr(self) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        """The fake WWDR's certificate and key (for issuing test certificates)."""
        return _load_pair(self.wwdr_cert, self.wwdr_key)


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialsError(f"{key_path} is not an RSA key")
    return certificate, key


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    # Keys are written owner-only from the start, never world-readable for a moment.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _reusable(pki: DevPKI, now: datetime) -> bool:
    """Whether the files in out_dir form a valid PKI that stays valid for a while."""
    try:
        credentials = SigningCredentials.from_p12(
            pki.signer_p12, password=pki.p12_password, wwdr=pki.wwdr_cert, now=now
        )
        root, _ = pki.load_root()
        pki.load_wwdr()
        pki.credentials(now=now)
        credentials.wwdr.verify_directly_issued_by(root)
    except Exception:  # anything unreadable, mismatched or expired: make a fresh set
        return False
    return (
        credentials.pass_type_identifier == pki.pass_type_identifier
        and credentials.team_identifier == pki.team_identifier
        and not credentials.warnings
        and root.not_valid_after_utc - now > _RENEW_BEFORE
    )


def make_dev_pki(
    out_dir: Path | str,
    *,
    p12_password: str = "dev-password",
    pass_type_identifier: str = DEV_PASS_TYPE_IDENTIFIER,
    team_identifier: str = DEV_TEAM_IDENTIFIER,
) -> DevPKI:
    """Write (or reuse, when present and valid) a development PKI in ``out_dir``.

    Files: ``root-ca.pem``/``root-ca.key.pem``, ``wwdr.pem``/``wwdr.key.pem``, ``pass.pem``,
    ``pass.key.pem`` and ``pass.p12`` (protected by ``p12_password``). Keys are mode 0600.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pki = DevPKI(
        root_cert=out / ROOT_CERT,
        wwdr_cert=out / WWDR_CERT,
        signer_cert=out / SIGNER_CERT,
        signer_key=out / SIGNER_KEY,
        signer_p12=out / SIGNER_P12,
        p12_password=p12_password,
        pass_type_identifier=pass_type_identifier,
        team_identifier=team_identifier,
        root_key=out / ROOT_KEY,
        wwdr_key=out / WWDR_KEY,
    )
    if _reusable(pki, _now()):
        return pki
    root_cert, root_key = make_root()
    wwdr_cert, wwdr_key = make_wwdr(root_cert, root_key)
    signer_cert, signer_key = make_pass_certificate(
        wwdr_cert,
        wwdr_key,
        pass_type_identifier=pass_type_identifier,
        team_identifier=team_identifier,
    )
    _write(pki.root_key, pem_key(root_key), secret=True)
    _write(pki.root_cert, pem_certificate(root_cert), secret=False)
    _write(pki.wwdr_key, pem_key(wwdr_key), secret=True)
    _write(pki.wwdr_cert, pem_certificate(wwdr_cert), secret=False)
    _write(pki.signer_key, pem_key(signer_key), secret=True)
    _write(pki.signer_cert, pem_certificate(signer_cert), secret=False)
    _write(pki.signer_p12, p12_bytes(signer_cert, signer_key, p12_password), secret=True)
    return pki


def make_tls_server_certificate(
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    *,
    hostnames: Sequence[str] = ("localhost",),
    addresses: Sequence[str] = ("127.0.0.1", "::1"),
    key: ec.EllipticCurvePrivateKey | None = None,
    days: int = 30,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate for local test servers (the fake APNs), issued by ``issuer_cert``.

    P-256 by default: generated in a millisecond and cheap in every TLS handshake. The names go
    in the subjectAltName (what clients check); the CN is the first host name.
    """
    key = key or ec.generate_private_key(ec.SECP256R1())
    start = _now() - timedelta(minutes=5)
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name((NameOID.COMMON_NAME, (list(hostnames) or ["localhost"])[0])))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return certificate, key
