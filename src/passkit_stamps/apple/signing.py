"""The ``signature`` file of a pass: a DER PKCS#7 (CMS) detached signature over ``manifest.json``.

The CMS structure is assembled here (its fixed parts once, with ``asn1crypto``) and only the
signature itself is made by ``cryptography``. Why not ``cryptography``'s
``PKCS7SignatureBuilder``: it always stamps the current time as ``signingTime`` and cannot take a
given one, so its signatures are never reproducible. Assembling it ourselves gives a pinned
``signing_time`` (identical inputs give identical bytes) and lets every part that does not depend
on the manifest (certificates, signer identifier, algorithms) be encoded once per credentials
object, which keeps signing at the cost of one RSA operation.

The result is what Wallet and ``openssl cms -verify -binary`` expect: SHA-256, signed attributes
``contentType``, ``signingTime`` and ``messageDigest``, embedding the signer certificate and the
WWDR intermediate, no encapsulated content (detached).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import algos as asn1_algos
from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .credentials import SigningCredentials

__all__ = ["sign_manifest"]


# Fixed DER pieces (RFC 5652). Only the signing time, the digest and the signature vary per call.
_OID_DATA = bytes.fromhex("06092a864886f70d010701")
_OID_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")
_OID_CONTENT_TYPE = bytes.fromhex("06092a864886f70d010903")
_OID_MESSAGE_DIGEST = bytes.fromhex("06092a864886f70d010904")
_OID_SIGNING_TIME = bytes.fromhex("06092a864886f70d010905")
_VERSION_1 = bytes.fromhex("020101")


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV."""
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _attribute(oid: bytes, value: bytes) -> bytes:
    return _der(0x30, oid + _der(0x31, value))


_CONTENT_TYPE_ATTRIBUTE = _attribute(_OID_CONTENT_TYPE, _OID_DATA)


@dataclass(frozen=True)
class _Template:
    """The DER of everything in the SignedData that does not depend on the manifest."""

    sid: bytes  # SignerIdentifier: issuerAndSerialNumber of the signer certificate
    digest_algorithm: bytes  # AlgorithmIdentifier sha256
    signature_algorithm: bytes  # AlgorithmIdentifier rsaEncryption / ecdsa-with-SHA256
    head: bytes  # version, digestAlgorithms, encapContentInfo, [0] certificates


def _template(credentials: SigningCredentials) -> _Template:
    cached = credentials._cache.get("cms")
    if isinstance(cached, _Template):
        return cached
    signer = asn1_x509.Certificate.load(
        credentials.certificate.public_bytes(serialization.Encoding.DER)
    )
    wwdr = asn1_x509.Certificate.load(credentials.wwdr.public_bytes(serialization.Encoding.DER))
    sid = asn1_cms.IssuerAndSerialNumber(
        {"issuer": signer.issuer, "serial_number": signer.serial_number}
    )
    digest_algorithm = asn1_algos.DigestAlgorithm({"algorithm": "sha256"}).dump()
    algorithm = (
        "rsassa_pkcs1v15"
        if isinstance(credentials.private_key, rsa.RSAPrivateKey)
        else "sha256_ecdsa"
    )
    certificates = asn1_cms.CertificateSet([signer, wwdr]).dump()  # DER-sorted SET OF
    template = _Template(
        sid=sid.dump(),
        digest_algorithm=digest_algorithm,
        signature_algorithm=asn1_algos.SignedDigestAlgorithm({"algorithm": algorithm}).dump(),
        # certificates is [0] IMPLICIT SET OF: same content, context tag 0xA0.
        head=_VERSION_1
        + _der(0x31, digest_algorithm)
        + _der(0x30, _OID_DATA)
        + b"\xa0"
        + certificates[1:],
    )
    # Benign race: two threads may both build it; both results are equal.
    credentials._cache["cms"] = template
    return template


def _time(when: datetime) -> bytes:
    """DER Time: UTCTime for 1950-2049, GeneralizedTime otherwise (RFC 5652)."""
    if when.tzinfo is None:
        raise ValueError("signing_time must be timezone-aware")
    when = when.astimezone(UTC)
    if 1950 <= when.year <= 2049:
        return _der(0x17, when.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return _der(0x18, when.strftime("%Y%m%d%H%M%SZ").encode("ascii"))


def sign_manifest(
    credentials: SigningCredentials, manifest: bytes, *, signing_time: datetime | None = None
) -> bytes:
    """The DER PKCS#7 detached signature of the exact ``manifest`` bytes (SHA-256).

    ``signing_time`` (timezone-aware, default now) is recorded to the second; with it fixed the
    output is deterministic for RSA keys.
    """
    template = _template(credentials)
    when = signing_time or datetime.now(UTC)
    digest = hashlib.sha256(manifest).digest()
    # DER orders SET OF members by their encoding: contentType, signingTime, messageDigest.
    attributes = (
        _CONTENT_TYPE_ATTRIBUTE
        + _attribute(_OID_SIGNING_TIME, _time(when))
        + _attribute(_OID_MESSAGE_DIGEST, _der(0x04, digest))
    )
    # The signature covers the attributes encoded as a SET (0x31), not as [0] IMPLICIT (0xA0).
    to_sign = _der(0x31, attributes)
    key = credentials.private_key
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
    signer_info = _der(
        0x30,
        _VERSION_1
        + template.sid
        + template.digest_algorithm
        + _der(0xA0, attributes)
        + template.signature_algorithm
        + _der(0x04, signature),
    )
    signed_data = _der(0x30, template.head + _der(0x31, signer_info))
    return _der(0x30, _OID_SIGNED_DATA + _der(0xA0, signed_data))
