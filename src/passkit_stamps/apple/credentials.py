"""Signing credentials for Apple Wallet passes: the Pass Type ID certificate, its key and the WWDR.

Loading credentials is where most users get stuck (wrong .p12 password, the wrong intermediate,
an expired certificate), so every check runs once, at load time, and each mistake raises its own
error type (see :mod:`passkit_stamps.errors`) whose message names the file and says how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtensionOID, NameOID

from ..errors import (
    CertificateExpiredError,
    CredentialsError,
    KeyMismatchError,
    NotPassTypeCertificateError,
    WrongPasswordError,
    WWDRCertificateError,
)

__all__ = [
    "PASS_TYPE_ID_EXTENSION",
    "WARN_BEFORE_EXPIRY",
    "PrivateKey",
    "SigningCredentials",
    "Source",
    "issued_by",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
"""Key types Wallet accepts for pass signatures (Apple issues RSA 2048 keys)."""

Source = str | Path | bytes
"""A file path, or the file's content as bytes (a ``str`` starting ``-----BEGIN`` is PEM text)."""

PASS_TYPE_ID_EXTENSION = x509.ObjectIdentifier("1.2.840.113635.100.6.1.16")
"""Apple's extension that marks (and names) a Pass Type ID certificate."""

WARN_BEFORE_EXPIRY = timedelta(days=30)

_MAX_FILE_BYTES = 1_000_000  # certificates and keys are a few KB; refuse anything absurd
_PASS_CN_PREFIXES = ("Pass Type ID: ", "Pass Type ID with NFC: ")
_WWDR_HELP = (
    "download the current intermediate 'Apple Worldwide Developer Relations Certification "
    "Authority' G4 (AppleWWDRCAG4.cer, valid until 2030-12-10) from "
    "https://www.apple.com/certificateauthority/ (the old G1 intermediate expired 2023-02-07)"
)
_RENEW_HELP = (
    "create a new Pass Type ID certificate in the Apple developer portal "
    "(Certificates, Identifiers & Profiles) and export a new .p12"
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- reading inputs --------------------------------------------------------------------------------


def _read(source: Source, what: str) -> tuple[bytes, str]:
    """The bytes of a source and a label naming it in messages (its path, or ``<bytes>``)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), "<bytes>"
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode("ascii", "replace"), "<text>"
    path = Path(source)
    label = str(path)
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise CredentialsError(
                f"{what} {label} is too large to be a certificate or key "
                f"(over {_MAX_FILE_BYTES} bytes): check the path"
            )
        return path.read_bytes(), label
    except FileNotFoundError:
        raise CredentialsError(f"{what} {label} does not exist: check the path") from None
    except IsADirectoryError:
        raise CredentialsError(f"{what} {label} is a folder, not a file: check the path") from None
    except OSError as exc:
        raise CredentialsError(f"{what} {label} cannot be read: {exc.strerror or exc}") from None


def _password_bytes(password: str | bytes | None) -> bytes | None:
    if password is None or isinstance(password, bytes):
        return password
    return password.encode("utf-8")


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN" in data[:4096]


def _load_certificates(data: bytes, label: str, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM (one or more) or DER file."""
    try:
        if _is_pem(data):
            certificates = x509.load_pem_x509_certificates(data)
        else:
            certificates = [x509.load_der_x509_certificate(data)]
    except ValueError:
        hint = (
            "it looks like a private key, not a certificate"
            if b"PRIVATE KEY" in data
            else "expected a PEM or DER (.cer) certificate"
        )
        raise CredentialsError(f"{what} {label} is not a readable certificate: {hint}") from None
    if not certificates:
        raise CredentialsError(f"{what} {label} holds no certificate")
    return certificates


def _load_private_key(data: bytes, label: str, password: bytes | None) -> PrivateKey:
    encrypted = b"ENCRYPTED" in data[:4096] if _is_pem(data) else None
    loader = (
        serialization.load_pem_private_key if _is_pem(data) else serialization.load_der_private_key
    )
    try:
        key: Any = loader(data, password)
    except TypeError:
        if password is None:
            raise WrongPasswordError(
                f"private key {label} is encrypted: pass its password (key_password=...)"
            ) from None
        # A password for a key that is not encrypted is harmless: load the key without it.
        key = loader(data, None)
    except (ValueError, UnsupportedAlgorithm):
        if password is not None and encrypted is not False:
            raise WrongPasswordError(
                f"private key {label} could not be decrypted: the password is wrong"
            ) from None
        hint = (
            "it looks like a certificate, not a private key"
            if b"CERTIFICATE" in data[:4096]
            else "expected a PEM or DER private key"
        )
        raise CredentialsError(f"private key {label} is not a readable key: {hint}") from None
    return _check_key_type(key, label)


def _check_key_type(key: object, label: str) -> PrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CredentialsError(
            f"private key {label} is a {type(key).__name__}: Wallet needs an RSA or EC key"
        )
    return key


def _is_pkcs12_structure(data: bytes) -> bool:
    """Whether bytes parse as a PKCS#12 PFX, to tell a wrong password from a wrong file."""
    from asn1crypto import pkcs12 as asn1_pkcs12  # local: only needed on the error path

    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        return bool(pfx["auth_safe"]["content_type"].native)
    except Exception:  # any parse error means "not a .p12"
        return False


def _load_p12(data: bytes, label: str, password: bytes | None) -> tuple[Any, Any]:
    attempts = [password] if password is not None else [None, b""]
    for attempt in attempts:
        try:
            key, certificate, extra = pkcs12.load_key_and_certificates(data, attempt)
        except (ValueError, UnsupportedAlgorithm):
            continue
        if certificate is None and extra:
            # Some exports leave the certificate unpaired: take the one matching the key.
            matching = [
                c
                for c in extra
                if key is None or _public_der(c.public_key()) == _public_der(key.public_key())
            ]
            certificate = matching[0] if matching else None
        return key, certificate
    if not _is_pkcs12_structure(data):
        raise CredentialsError(
            f".p12 file {label} is not a PKCS#12 (.p12/.pfx) file: export the certificate "
            "and its key from Keychain Access as 'Personal Information Exchange (.p12)'"
        )
    if password is None:
        raise WrongPasswordError(
            f".p12 file {label} is password-protected: pass its password (password=...)"
        )
    raise WrongPasswordError(
        f".p12 file {label} could not be opened: the password is wrong (or the file uses "
        "legacy encryption this OpenSSL cannot read; re-export it with "
        "'openssl pkcs12 -legacy -in old.p12 -out both.pem' then "
        "'openssl pkcs12 -export -in both.pem -out new.p12')"
    )


# -- checks ----------------------------------------------------------------------------------------


def _fmt(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _describe(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "<empty subject>"


def _name_value(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    attributes = certificate.subject.get_attributes_for_oid(oid)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _extension_value(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> Any:
    try:
        return certificate.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def _is_ca(certificate: x509.Certificate) -> bool:
    constraints = _extension_value(certificate, ExtensionOID.BASIC_CONSTRAINTS)
    return isinstance(constraints, x509.BasicConstraints) and constraints.ca


def _pass_identifiers(certificate: x509.Certificate, label: str) -> tuple[str, str]:
    """(pass type identifier, team identifier) of a Pass Type ID certificate, or a clear error."""
    subject = _describe(certificate)
    if _is_ca(certificate):
        raise NotPassTypeCertificateError(
            f"certificate {label} ({subject}) is a certificate authority, not a Pass Type ID "
            "certificate: pass the WWDR intermediate as wwdr=... and your Pass Type ID "
            "certificate as the signer"
        )
    uid = _name_value(certificate, NameOID.USER_ID)
    common_name = _name_value(certificate, NameOID.COMMON_NAME) or ""
    has_extension = _extension_value(certificate, PASS_TYPE_ID_EXTENSION) is not None
    named_pass_type = common_name.startswith(_PASS_CN_PREFIXES)
    fix = (
        "create a Pass Type ID certificate in the Apple developer portal "
        "(Identifiers > Pass Type IDs, then Create Certificate); app, push or development "
        "certificates cannot sign passes"
    )
    if not (has_extension or named_pass_type) or not uid or not uid.startswith("pass."):
        raise NotPassTypeCertificateError(
            f"certificate {label} ({subject}) is not a Pass Type ID certificate "
            f"(no UID starting with 'pass.' and no Apple pass type extension): {fix}"
        )
    team = _name_value(certificate, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not team:
        raise NotPassTypeCertificateError(
            f"certificate {label} ({subject}) has no OU (team identifier): {fix}"
        )
    return uid, team


def _check_valid(certificate: x509.Certificate, label: str, what: str, now: datetime) -> None:
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if now < start:
        raise CertificateExpiredError(
            f"{what} {label} is not yet valid: valid from {_fmt(start)} (now {_fmt(now)}); "
            "check the system clock or wait until then"
        )
    if now > end:
        raise CertificateExpiredError(f"{what} {label} expired on {_fmt(end)}: {_RENEW_HELP}")


def _key_identifier(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    value = _extension_value(certificate, oid)
    if isinstance(value, x509.SubjectKeyIdentifier):
        return value.digest
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return value.key_identifier
    return None


def issued_by(signer: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` issued ``signer``: names, key identifiers and the signature agree."""
    if signer.issuer != issuer.subject:
        return False
    aki = _key_identifier(signer, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    ski = _key_identifier(issuer, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    if aki is not None and ski is not None and aki != ski:
        return False
    # Checked by hand rather than with verify_directly_issued_by, which refuses SHA-1 signatures:
    # intermediates and old Pass Type ID certificates (Apple's samples) are signed with SHA-1.
    key = issuer.public_key()
    hash_algorithm = signer.signature_hash_algorithm
    parameters = signer.signature_algorithm_parameters
    try:
        if isinstance(key, rsa.RSAPublicKey) and isinstance(
            parameters, padding.PKCS1v15 | padding.PSS
        ):
            if hash_algorithm is None:
                return False
            key.verify(signer.signature, signer.tbs_certificate_bytes, parameters, hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(parameters, ec.ECDSA):
            key.verify(signer.signature, signer.tbs_certificate_bytes, parameters)
        else:
            return False
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _choose_wwdr(
    signer: x509.Certificate, candidates: list[x509.Certificate], label: str, now: datetime
) -> x509.Certificate:
    for candidate in candidates:
        if issued_by(signer, candidate):
            if now > candidate.not_valid_after_utc:
                raise WWDRCertificateError(
                    f"WWDR certificate {label} ({_describe(candidate)}) expired on "
                    f"{_fmt(candidate.not_valid_after_utc)}: {_WWDR_HELP}; if your Pass Type ID "
                    "certificate was issued by the expired intermediate, create a new one"
                )
            if now < candidate.not_valid_before_utc:
                raise WWDRCertificateError(
                    f"WWDR certificate {label} is not yet valid (from "
                    f"{_fmt(candidate.not_valid_before_utc)}): check the system clock"
                )
            return candidate
    given = "; ".join(_describe(c) for c in candidates)
    expired = [c for c in candidates if now > c.not_valid_after_utc]
    note = f" (it also expired on {_fmt(expired[0].not_valid_after_utc)})" if expired else ""
    raise WWDRCertificateError(
        f"WWDR certificate {label} ({given}) did not issue the signer certificate, which was "
        f"issued by {signer.issuer.rfc4514_string()}{note}: {_WWDR_HELP}"
    )


def _public_der(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


# -- the credentials -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningCredentials:
    """A checked Pass Type ID certificate, its private key and the WWDR intermediate that issued it.

    Build it with :meth:`from_p12`, :meth:`from_pem` or :meth:`from_objects`: they run every check.
    The object is immutable and safe to share between threads; it keeps what signing can reuse.
    """

    certificate: x509.Certificate
    private_key: PrivateKey
    wwdr: x509.Certificate
    pass_type_identifier: str  # the certificate's UID, e.g. "pass.com.example.stamps"
    team_identifier: str  # the certificate's OU, e.g. "EXAMPLE123"
    warnings: tuple[str, ...] = ()  # e.g. "expires within 30 days"
    # Reusable signing state (see apple.signing), built on first use; not part of equality.
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def expires_at(self) -> datetime:
        """When the first of the signer and the WWDR expires: passes cannot be signed after it."""
        return min(self.certificate.not_valid_after_utc, self.wwdr.not_valid_after_utc)

    @classmethod
    def from_p12(
        cls,
        p12: Source,
        *,
        password: str | bytes | None = None,
        wwdr: Source,
        now: datetime | None = None,
    ) -> SigningCredentials:
        """Load a ``.p12`` exported from Keychain (certificate + key) and the WWDR intermediate."""
        data, label = _read(p12, ".p12 file")
        key, certificate = _load_p12(data, label, _password_bytes(password))
        if key is None:
            raise CredentialsError(
                f".p12 file {label} holds no private key: in Keychain Access, expand the "
                "certificate and export it together with its private key"
            )
        if certificate is None:
            raise CredentialsError(
                f".p12 file {label} holds no certificate: export the Pass Type ID certificate "
                "together with its key from Keychain Access"
            )
        return cls._checked(
            certificate,
            _check_key_type(key, label),
            wwdr,
            now=now,
            certificate_label=label,
            key_label=label,
        )

    @classmethod
    def from_pem(
        cls,
        certificate: Source,
        key: Source,
        *,
        key_password: str | bytes | None = None,
        wwdr: Source,
        now: datetime | None = None,
    ) -> SigningCredentials:
        """Load a certificate (PEM or DER ``.cer``), its private key (PEM or DER) and the WWDR."""
        cert_data, cert_label = _read(certificate, "certificate")
        key_data, key_label = _read(key, "private key")
        signer = _load_certificates(cert_data, cert_label, "certificate")[0]
        private_key = _load_private_key(key_data, key_label, _password_bytes(key_password))
        return cls._checked(
            signer,
            private_key,
            wwdr,
            now=now,
            certificate_label=cert_label,
            key_label=key_label,
        )

    @classmethod
    def load(
        cls,
        *,
        p12: Source | None = None,
        p12_password: str | bytes | None = None,
        certificate: Source | None = None,
        key: Source | None = None,
        key_password: str | bytes | None = None,
        wwdr: Source | None = None,
        now: datetime | None = None,
    ) -> SigningCredentials:
        """Credentials from exactly one of ``p12`` or ``certificate`` + ``key``, with ``wwdr``:
        the one entry point for command lines and configuration files."""
        if wwdr is None:
            raise CredentialsError("wwdr is required: Apple's WWDR intermediate certificate (G4)")
        if p12 is not None:
            if certificate is not None or key is not None:
                raise CredentialsError(
                    "give either a .p12, or a certificate with its key; not both"
                )
            if key_password is not None:
                raise CredentialsError(
                    "a key password goes with a separate key; use the .p12 password"
                )
            return cls.from_p12(p12, password=p12_password, wwdr=wwdr, now=now)
        if certificate is None or key is None:
            raise CredentialsError("signing needs a .p12, or both a certificate and its key")
        if p12_password is not None:
            raise CredentialsError("a .p12 password goes with a .p12; use the key password")
        return cls.from_pem(certificate, key, key_password=key_password, wwdr=wwdr, now=now)

    @classmethod
    def from_objects(
        cls,
        certificate: x509.Certificate,
        private_key: PrivateKey,
        wwdr: x509.Certificate | Source,
        *,
        now: datetime | None = None,
    ) -> SigningCredentials:
        """Check already loaded objects (e.g. from a secrets manager) and build credentials."""
        return cls._checked(
            certificate,
            _check_key_type(private_key, "<object>"),
            wwdr,
            now=now,
            certificate_label="<object>",
            key_label="<object>",
        )

    @classmethod
    def _checked(
        cls,
        certificate: x509.Certificate,
        private_key: PrivateKey,
        wwdr: x509.Certificate | Source,
        *,
        now: datetime | None,
        certificate_label: str,
        key_label: str,
    ) -> SigningCredentials:
        now = now or _utcnow()
        if isinstance(wwdr, x509.Certificate):
            wwdr_label, candidates = "<object>", [wwdr]
        else:
            wwdr_data, wwdr_label = _read(wwdr, "WWDR certificate")
            candidates = _load_certificates(wwdr_data, wwdr_label, "WWDR certificate")
        if _public_der(private_key.public_key()) != _public_der(certificate.public_key()):
            what = (
                f"the private key in {key_label} does not match its certificate"
                if key_label == certificate_label
                else f"private key {key_label} does not belong to certificate {certificate_label}"
            )
            raise KeyMismatchError(
                f"{what}: use the key made with this certificate's signing request (CSR), or "
                "export certificate and key together from Keychain Access as a .p12"
            )
        pass_type_identifier, team_identifier = _pass_identifiers(certificate, certificate_label)
        _check_valid(certificate, certificate_label, "certificate", now)
        chosen = _choose_wwdr(certificate, candidates, wwdr_label, now)
        warnings = []
        for cert, what, label in (
            (certificate, "certificate", certificate_label),
            (chosen, "WWDR certificate", wwdr_label),
        ):
            end = cert.not_valid_after_utc
            if end - now < WARN_BEFORE_EXPIRY:
                days = max(0, (end - now).days)
                fix = _RENEW_HELP if cert is certificate else _WWDR_HELP
                warnings.append(f"{what} {label} expires on {_fmt(end)} (in {days} days): {fix}")
        return cls(
            certificate=certificate,
            private_key=private_key,
            wwdr=chosen,
            pass_type_identifier=pass_type_identifier,
            team_identifier=team_identifier,
            warnings=tuple(warnings),
        )
