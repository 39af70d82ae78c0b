"""Check a ``.pkpass`` the way Wallet would, and say every reason it would not open.

The input is untrusted (passes made by other tools, uploads), so the archive is bounded before
anything is decompressed: its size, the number of entries, the declared sizes and compression
ratios, and then every entry is stream-read with a cap, because zip headers can lie.

The signature is checked in-process: ``cryptography`` parses certificates and verifies RSA/ECDSA
signatures but has no CMS verification, so ``asn1crypto`` reads the SignedData structure.
"""

from __future__ import annotations

import codecs
import hashlib
import hmac
import io
import json
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from ..errors import CredentialsError, InvalidPassError, UnsafeArchiveError
from .credentials import issued_by
from .media import APPLE_ICON_FILES

__all__ = [
    "STYLE_KEYS",
    "ArchiveLimits",
    "SignatureCheck",
    "VerifiedPass",
    "check_signature",
    "loads_lenient",
    "read_archive",
    "verify_pkpass",
]

STYLE_KEYS = ("boardingPass", "coupon", "eventTicket", "generic", "storeCard")
REQUIRED_KEYS = (
    "formatVersion",
    "passTypeIdentifier",
    "teamIdentifier",
    "serialNumber",
    "organizationName",
    "description",
)
ICON_NAMES = APPLE_ICON_FILES
_UNSIGNED_NAMES = ("manifest.json", "signature")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_CHUNK = 64 * 1024

_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


# -- the archive ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds for untrusted archives; anything beyond them is refused before decompressing."""

    max_archive_bytes: int = 10 * 1024 * 1024
    max_total_bytes: int = 50 * 1024 * 1024  # all entries uncompressed
    max_entries: int = 100
    max_ratio: float = 100.0  # uncompressed / compressed, per entry ...
    ratio_floor: int = 64 * 1024  # ... for entries larger than this (tiny JSON compresses well)
    # Reasons reported at most (a hostile manifest can list any number of missing files).
    max_reasons: int = 50


def _too_compressed(size: int, compressed: int, limits: ArchiveLimits) -> bool:
    return size > limits.ratio_floor and size > limits.max_ratio * max(compressed, 1)


def read_archive(
    data: bytes, limits: ArchiveLimits = ArchiveLimits()
) -> tuple[dict[str, bytes], list[str]]:
    """The files of a zip (``{name: bytes}``, folders left out) and the reasons found on the way.

    Raises ``UnsafeArchiveError`` for oversized input or a zip bomb, ``InvalidPassError`` when
    the input is not a zip at all. Reasons are entries that cannot be read (encrypted, corrupt).
    """
    if len(data) > limits.max_archive_bytes:
        raise UnsafeArchiveError(
            [f"archive is {len(data)} bytes, more than the {limits.max_archive_bytes} allowed"]
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        hint = ""
        if data.lstrip()[:1] in (b"{", b"["):
            hint = " (this looks like JSON: zip pass.json, images, manifest.json and signature)"
        raise InvalidPassError(
            [f"not a zip archive: a .pkpass must be a zip file ({exc}){hint}"]
        ) from None
    if len(infos) > limits.max_entries:
        raise UnsafeArchiveError(
            [f"archive has {len(infos)} entries, more than the {limits.max_entries} allowed"]
        )
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_total_bytes:
        raise UnsafeArchiveError(
            [
                f"archive would unpack to {declared} bytes, more than the "
                f"{limits.max_total_bytes} allowed"
            ]
        )
    for info in infos:
        if _too_compressed(info.file_size, info.compress_size, limits):
            raise UnsafeArchiveError(
                [
                    f"{info.filename}: compressed {info.compress_size} bytes unpack to "
                    f"{info.file_size} (ratio over {limits.max_ratio:g}): looks like a zip bomb"
                ]
            )
    files: dict[str, bytes] = {}
    reasons: list[str] = []
    total = 0
    for info in infos:
        name = info.filename
        if name.endswith("/"):
            continue  # folder entries carry no content
        if name in files:
            reasons.append(f"{name} appears more than once in the archive")
            continue
        if info.flag_bits & 0x1:
            reasons.append(f"{name} is encrypted: Wallet cannot read encrypted zip entries")
            continue
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            reasons.append(
                f"{name} uses zip compression method {info.compress_type}: "
                "Wallet reads only stored or deflated entries"
            )
            continue
        try:
            content, total = _read_entry(archive, info, total, limits)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            reasons.append(f"{name} cannot be read from the archive: {exc}")
            continue
        files[name] = content
    return files, reasons


def _read_entry(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, total: int, limits: ArchiveLimits
) -> tuple[bytes, int]:
    """One entry, read in chunks and never past its declared size nor the total budget."""
    parts: list[bytes] = []
    size = 0
    with archive.open(info) as stream:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            total += len(chunk)
            if size > info.file_size or total > limits.max_total_bytes:
                raise UnsafeArchiveError(
                    [f"{info.filename} unpacks to more than its header declares: refused"]
                )
            if _too_compressed(size, info.compress_size, limits):
                raise UnsafeArchiveError(
                    [f"{info.filename}: compression ratio over {limits.max_ratio:g}: refused"]
                )
            parts.append(chunk)
    return b"".join(parts), total


# -- lenient JSON ---------------------------------------------------------------------------------

# A JSON string (kept as is) or a comma followed only by whitespace before a closing bracket.
_TRAILING_COMMA = re.compile(r'("(?:\\.|[^"\\])*")|,(\s*[}\]])')


def loads_lenient(raw: bytes, name: str) -> tuple[Any, list[str]]:
    """Parse JSON as Wallet does: a byte order mark and trailing commas are tolerated.

    Returns the value and warnings about what was tolerated; raises ``ValueError`` with a
    message naming the file when it cannot be parsed.
    """
    warnings: list[str] = []
    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if raw.startswith(bom):
            raw = raw[len(bom) :]
            warnings.append(f"{name} starts with a byte order mark ({encoding})")
            break
    else:
        encoding = "utf-8"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name} is not valid {encoding.upper()} text: {exc}") from None
    try:
        return json.loads(text), warnings
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        first_error = exc
    cleaned = _TRAILING_COMMA.sub(lambda m: m.group(1) or m.group(2), text)
    if cleaned != text:
        try:
            value = json.loads(cleaned)
        except (json.JSONDecodeError, RecursionError, ValueError):
            pass
        else:
            warnings.append(f"{name} has trailing commas (tolerated by Wallet, not strict JSON)")
            return value, warnings
    raise ValueError(f"{name} is not valid JSON: {first_error}")


# -- the signature --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureCheck:
    """What checking a detached CMS signature over a manifest found."""

    reasons: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    signer: x509.Certificate | None = None
    certificates: tuple[x509.Certificate, ...] = ()
    signing_time: datetime | None = None
    digest_algorithm: str | None = None  # "sha1", "sha256", ...
    chain_checked: bool = False

    @property
    def ok(self) -> bool:
        """Whether the signature is valid (no reasons)."""
        return not self.reasons


@dataclass
class _Parsed:
    certificates: list[x509.Certificate] = field(default_factory=list)
    sid: Any = None
    digest_algorithm: str = ""
    signed_attrs_der: bytes | None = None
    message_digest: bytes | None = None
    signing_time: datetime | None = None
    content_type: str | None = None
    signature_algorithm: str = ""
    signature: bytes = b""
    detached: bool = True
    signer_count: int = 0


def _parse_cms(signature: bytes) -> _Parsed:
    """The parts of a DER SignedData this check needs; ``ValueError`` when it is not one."""
    try:
        info = asn1_cms.ContentInfo.load(signature, strict=True)
        if info["content_type"].native != "signed_data":
            raise ValueError(f"content type is {info['content_type'].native}, not signedData")
        signed_data = info["content"]
        parsed = _Parsed()
        parsed.detached = signed_data["encap_content_info"]["content"].native is None
        for choice in signed_data["certificates"] or []:
            if choice.name == "certificate":
                parsed.certificates.append(x509.load_der_x509_certificate(choice.chosen.dump()))
        signer_infos = signed_data["signer_infos"]
        parsed.signer_count = len(signer_infos)
        if not parsed.signer_count:
            return parsed
        signer_info = signer_infos[0]
        parsed.sid = signer_info["sid"]
        parsed.digest_algorithm = signer_info["digest_algorithm"]["algorithm"].native
        parsed.signature_algorithm = signer_info["signature_algorithm"].signature_algo
        parsed.signature = signer_info["signature"].native
        attrs = signer_info["signed_attrs"]
        if attrs.native is not None:
            # Signed over the DER of the attributes as a SET: swap the [0] tag byte for 0x31.
            parsed.signed_attrs_der = b"\x31" + attrs.dump()[1:]
            for attribute in attrs:
                kind = attribute["type"].native
                values = attribute["values"]
                if kind == "message_digest" and len(values) == 1:
                    parsed.message_digest = values[0].native
                elif kind == "signing_time" and len(values) == 1:
                    parsed.signing_time = values[0].native
                elif kind == "content_type" and len(values) == 1:
                    parsed.content_type = values[0].native
        return parsed
    except ValueError:
        raise
    except Exception as exc:  # asn1crypto raises assorted types on malformed input
        raise ValueError(str(exc) or type(exc).__name__) from None


def _find_signer(parsed: _Parsed) -> x509.Certificate | None:
    sid = parsed.sid
    if sid is None:
        return None
    for certificate in parsed.certificates:
        if sid.name == "issuer_and_serial_number":
            issuer_der = certificate.issuer.public_bytes()
            if (
                issuer_der == sid.chosen["issuer"].dump()
                and certificate.serial_number == sid.chosen["serial_number"].native
            ):
                return certificate
        else:
            try:
                ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == sid.chosen.native:
                return certificate
    return None


def _verify_raw(
    certificate: x509.Certificate, signature: bytes, data: bytes, algorithm: str, digest: str
) -> str | None:
    """None when ``signature`` over ``data`` verifies with the certificate's key, else a reason."""
    hash_type = _DIGESTS.get(digest)
    if hash_type is None:
        return f"signature digest algorithm {digest} is not supported"
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm == "rsassa_pkcs1v15":
            key.verify(signature, data, padding.PKCS1v15(), hash_type())
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm == "ecdsa":
            key.verify(signature, data, ec.ECDSA(hash_type()))
        else:
            return f"signature algorithm {algorithm} with a {type(key).__name__} is not supported"
    except InvalidSignature:
        return "signature does not verify with the signer certificate's key (wrong key or changed)"
    except (UnsupportedAlgorithm, ValueError) as exc:
        return f"signature cannot be checked: {exc}"
    return None


def _load_roots(
    ca: bytes | x509.Certificate | Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    if isinstance(ca, x509.Certificate):
        return [ca]
    if isinstance(ca, bytes | bytearray):
        data = bytes(ca)
        try:
            if b"-----BEGIN" in data:
                return x509.load_pem_x509_certificates(data)
            return [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise CredentialsError(
                "the root CA given (ca=...) is not a readable PEM or DER certificate"
            ) from None
    return list(ca)


def _fmt(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _validity_problem(certificate: x509.Certificate, what: str, now: datetime) -> str | None:
    subject = certificate.subject.rfc4514_string()
    if now > certificate.not_valid_after_utc:
        return f"{what} ({subject}) expired on {_fmt(certificate.not_valid_after_utc)}"
    if now < certificate.not_valid_before_utc:
        return f"{what} ({subject}) is not valid before {_fmt(certificate.not_valid_before_utc)}"
    return None


def check_signature(
    signature: bytes,
    manifest: bytes,
    *,
    ca: bytes | x509.Certificate | Sequence[x509.Certificate] | None = None,
    now: datetime | None = None,
) -> SignatureCheck:
    """Check a detached CMS signature over the exact ``manifest`` bytes, collecting every reason.

    The chain (signer -> intermediate embedded in the signature -> ``ca``) and its validity at
    ``now`` are checked only when a root ``ca`` is given; without it, expired certificates are
    only warnings.
    """
    now = now or datetime.now(UTC)
    if signature.lstrip()[:10] == b"-----BEGIN":
        return SignatureCheck(
            reasons=("signature is PEM text: Wallet needs it DER-encoded (binary)",)
        )
    try:
        parsed = _parse_cms(signature)
    except ValueError as exc:
        return SignatureCheck(reasons=(f"signature is not a DER PKCS#7 signature: {exc}",))
    reasons: list[str] = []
    warnings: list[str] = []
    if parsed.signer_count == 0:
        return SignatureCheck(reasons=("signature has no signer",))
    if parsed.signer_count > 1:
        warnings.append(f"signature has {parsed.signer_count} signers; only the first is checked")
    if not parsed.detached:
        reasons.append("signature embeds its content: Wallet needs a detached signature")
    signer = _find_signer(parsed)
    digest = parsed.digest_algorithm
    hash_type = _DIGESTS.get(digest)
    if hash_type is None:
        reasons.append(f"signature digest algorithm {digest} is not supported")
    if signer is None:
        reasons.append("signature does not embed the signer certificate")
    if parsed.signed_attrs_der is None:
        reasons.append("signature has no signed attributes (no signingTime): Wallet rejects it")
        if signer is not None and hash_type is not None:
            problem = _verify_raw(
                signer, parsed.signature, manifest, parsed.signature_algorithm, digest
            )
            if problem:
                reasons.append(problem)
    else:
        if parsed.signing_time is None:
            reasons.append("signature has no signingTime attribute: Wallet rejects it")
        if parsed.content_type not in (None, "data"):
            reasons.append(f"signed content type is {parsed.content_type}, not data")
        if hash_type is not None:
            actual = hashlib.new(digest, manifest).digest()
            if parsed.message_digest is None:
                reasons.append("signature has no messageDigest attribute")
            elif not hmac.compare_digest(actual, parsed.message_digest):
                reasons.append(
                    "signature was made over different bytes than manifest.json "
                    "(message digest differs)"
                )
            if signer is not None:
                problem = _verify_raw(
                    signer,
                    parsed.signature,
                    parsed.signed_attrs_der,
                    parsed.signature_algorithm,
                    digest,
                )
                if problem:
                    reasons.append(problem)
    intermediate = None
    if signer is not None:
        intermediate = next(
            (c for c in parsed.certificates if c is not signer and issued_by(signer, c)), None
        )
        if intermediate is None:
            reasons.append(
                "signature does not embed the WWDR intermediate that issued the signer "
                f"certificate ({signer.issuer.rfc4514_string()})"
            )
    chain_checked = False
    if signer is not None:
        expiry = [
            problem
            for cert, what in ((signer, "signer certificate"), (intermediate, "intermediate"))
            if cert is not None and (problem := _validity_problem(cert, what, now))
        ]
        if ca is None:
            warnings.extend(f"{p} (chain not checked: no root CA given)" for p in expiry)
        else:
            chain_checked = True
            roots = _load_roots(ca)
            reasons.extend(f"certificate chain expired: {p}" for p in expiry)
            top = intermediate or signer
            root = next((r for r in roots if r == top or issued_by(top, r)), None)
            if root is None:
                names = "; ".join(r.subject.rfc4514_string() for r in roots) or "none"
                reasons.append(
                    f"certificate chain does not lead to the given root CA ({names}): "
                    f"{top.subject.rfc4514_string()} was issued by {top.issuer.rfc4514_string()}"
                )
            elif problem := _validity_problem(root, "root CA", now):
                reasons.append(f"certificate chain expired: {problem}")
    if (
        signer is not None
        and parsed.signing_time is not None
        and not signer.not_valid_before_utc <= parsed.signing_time <= signer.not_valid_after_utc
    ):
        warnings.append(
            f"signing time {_fmt(parsed.signing_time)} lies outside the signer "
            "certificate's validity"
        )
    return SignatureCheck(
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        signer=signer,
        certificates=tuple(parsed.certificates),
        signing_time=parsed.signing_time,
        digest_algorithm=digest or None,
        chain_checked=chain_checked,
    )


# -- the pass -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedPass:
    """A pass that passed every check, and what was found in it."""

    pass_json: dict[str, Any]
    manifest: dict[str, str]
    files: tuple[str, ...]  # every file in the archive, sorted
    signer_subject: str  # RFC 4514, e.g. "C=US,O=...,OU=EXAMPLE123,CN=Pass Type ID: ...,UID=..."
    signer_certificate: x509.Certificate
    signing_time: datetime | None
    digest_algorithm: str  # of the signature: "sha1" (Apple's tool) or "sha256"
    chain_checked: bool  # whether the chain was checked against a given root CA
    warnings: tuple[str, ...]

    @property
    def pass_type_identifier(self) -> str:
        return str(self.pass_json.get("passTypeIdentifier", ""))

    @property
    def team_identifier(self) -> str:
        return str(self.pass_json.get("teamIdentifier", ""))

    @property
    def serial_number(self) -> str:
        return str(self.pass_json.get("serialNumber", ""))

    @property
    def style(self) -> str:
        """The pass style key, e.g. ``storeCard``."""
        return next((key for key in STYLE_KEYS if key in self.pass_json), "")


def _subject_value(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    attributes = certificate.subject.get_attributes_for_oid(oid)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _check_manifest(
    files: Mapping[str, bytes], reasons: list[str], warnings: list[str]
) -> dict[str, str] | None:
    raw = files.get("manifest.json")
    if raw is None:
        reasons.append("no manifest.json: the pass is not signed (Wallet rejects it)")
        return None
    try:
        value, notes = loads_lenient(raw, "manifest.json")
    except ValueError as exc:
        reasons.append(str(exc))
        return None
    warnings.extend(notes)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        reasons.append('manifest.json must be an object {"file name": "sha1 hex", ...}')
        return None
    manifest: dict[str, str] = value
    missing = 0
    for name, expected in sorted(manifest.items()):
        content = files.get(name)
        if content is None:
            missing += 1
            if missing <= ArchiveLimits.max_reasons:  # one line each is enough to see the problem
                reasons.append(f"manifest.json lists {name} but the archive does not contain it")
        elif not hmac.compare_digest(hashlib.sha1(content).hexdigest(), expected.lower()):
            reasons.append(f"{name} does not match its SHA-1 hash in manifest.json (changed)")
    if missing > ArchiveLimits.max_reasons:
        reasons.append(
            f"manifest.json lists {missing - ArchiveLimits.max_reasons:,} more files "
            "the archive does not contain"
        )
    for name in sorted(files):
        if name not in manifest and name not in _UNSIGNED_NAMES:
            reasons.append(f"{name} is in the archive but not listed in manifest.json")
    return manifest


def _check_pass_json(
    files: Mapping[str, bytes], reasons: list[str], warnings: list[str]
) -> dict[str, Any] | None:
    raw = files.get("pass.json")
    if raw is None:
        reasons.append("no pass.json in the archive")
        return None
    try:
        value, notes = loads_lenient(raw, "pass.json")
    except ValueError as exc:
        reasons.append(str(exc))
        return None
    warnings.extend(notes)
    if not isinstance(value, dict):
        reasons.append("pass.json must be a JSON object")
        return None
    missing = [key for key in REQUIRED_KEYS if key not in value]
    if missing:
        reasons.append(f"pass.json lacks required key(s): {', '.join(missing)}")
    if "formatVersion" in value and value["formatVersion"] != 1:
        reasons.append(f"pass.json formatVersion is {value['formatVersion']!r}, must be 1")
    for key in REQUIRED_KEYS[1:]:
        if key in value and not isinstance(value[key], str):
            reasons.append(f"pass.json {key} must be a string")
    styles = [key for key in STYLE_KEYS if key in value]
    if len(styles) != 1:
        found = ", ".join(styles) or "none"
        reasons.append(
            f"pass.json must have exactly one style key of {', '.join(STYLE_KEYS)} (found: {found})"
        )
    if "barcode" in value:
        warnings.append("pass.json uses the deprecated 'barcode' key; use 'barcodes'")
    if len(styles) == 1:
        _check_field_keys(value[styles[0]], reasons)
    for key in _DATE_KEYS:
        if key in value and not _is_w3c_date_time(value[key]):
            reasons.append(
                f"pass.json {key} {value[key]!r} is not an ISO 8601 date and time with a time "
                "zone (e.g. 2026-05-01T18:00:00+02:00)"
            )
    url = value.get("webServiceURL")
    if isinstance(url, str):
        if url.rstrip("/").endswith("/v1"):
            reasons.append(
                f"pass.json webServiceURL {url!r} ends in /v1: the device appends /v1/... itself"
            )
        token = value.get("authenticationToken")
        if not isinstance(token, str) or len(token) < 16:
            reasons.append(
                "pass.json authenticationToken must be a string of at least 16 characters"
            )
    return value


_FIELD_LISTS = ("headerFields", "primaryFields", "secondaryFields", "auxiliaryFields", "backFields")
_DATE_KEYS = ("expirationDate", "relevantDate")
# W3C date-time (what Apple documents): a time, optional seconds and fraction, and a zone.
_W3C_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})"
)


def _check_field_keys(style: Any, reasons: list[str]) -> None:
    """Field keys must be unique across the whole pass: Wallet refuses a pass that repeats one."""
    if not isinstance(style, dict):
        return
    seen: set[str] = set()
    repeated: list[str] = []
    for name in _FIELD_LISTS:
        fields = style.get(name)
        for item in fields if isinstance(fields, list) else ():
            key = item.get("key") if isinstance(item, dict) else None
            if not isinstance(key, str):
                continue
            if key in seen and key not in repeated:
                repeated.append(key)
            seen.add(key)
    reasons.extend(
        f"pass.json field key {key!r} is used more than once: keys must be unique across the pass"
        for key in repeated
    )


def _is_w3c_date_time(value: Any) -> bool:
    if not isinstance(value, str) or not _W3C_DATE_TIME.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:  # e.g. month 13
        return False
    return True


def verify_pkpass(
    data: bytes,
    *,
    ca: bytes | x509.Certificate | Sequence[x509.Certificate] | None = None,
    now: datetime | None = None,
    limits: ArchiveLimits = ArchiveLimits(),
) -> VerifiedPass:
    """Verify a ``.pkpass``: archive, manifest, signature, pass.json and icon.

    Raises ``UnsafeArchiveError`` for oversized input or zip bombs and ``InvalidPassError``
    listing every reason found otherwise. ``ca`` (PEM/DER bytes or certificates) is the root to
    check the chain against, at ``now``; without it only the signature itself is checked.
    """
    files, reasons = read_archive(data, limits)
    warnings: list[str] = []
    manifest = _check_manifest(files, reasons, warnings)
    signature = files.get("signature")
    check: SignatureCheck | None = None
    if signature is None:
        reasons.append("no signature file: the pass is not signed (Wallet rejects it)")
    elif "manifest.json" in files:
        check = check_signature(signature, files["manifest.json"], ca=ca, now=now)
        reasons.extend(check.reasons)
        warnings.extend(check.warnings)
    pass_json = _check_pass_json(files, reasons, warnings)
    signer = check.signer if check is not None else None
    if pass_json is not None and signer is not None:
        for key, oid, what in (
            ("passTypeIdentifier", NameOID.USER_ID, "UID"),
            ("teamIdentifier", NameOID.ORGANIZATIONAL_UNIT_NAME, "OU"),
        ):
            expected = _subject_value(signer, oid)
            if key in pass_json and pass_json[key] != expected:
                reasons.append(
                    f"pass.json {key} {pass_json[key]!r} does not match the signer "
                    f"certificate's {what} {expected!r}"
                )
    icons = [name for name in ICON_NAMES if name in files]
    if not icons:
        reasons.append("no icon.png: Wallet does not show a pass without an icon")
    reasons.extend(f"{name} is not a PNG image" for name in icons if not _is_png(files[name]))
    if reasons or manifest is None or pass_json is None or check is None or signer is None:
        if len(reasons) > limits.max_reasons:
            hidden = len(reasons) - limits.max_reasons
            reasons = [*reasons[: limits.max_reasons], f"and {hidden:,} more reason(s)"]
        raise InvalidPassError(reasons or ["pass could not be verified"])
    return VerifiedPass(
        pass_json=pass_json,
        manifest=manifest,
        files=tuple(sorted(files)),
        signer_subject=signer.subject.rfc4514_string(),
        signer_certificate=signer,
        signing_time=check.signing_time,
        digest_algorithm=check.digest_algorithm or "",
        chain_checked=check.chain_checked,
        warnings=tuple(warnings),
    )


def _is_png(data: bytes) -> bool:
    return data.startswith(_PNG_MAGIC)
