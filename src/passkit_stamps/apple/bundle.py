"""Signed ``.pkpass`` bundles of stamp cards, and ``.pkpasses`` bundles of several passes.

A pass is a zip of ``pass.json``, images, ``<lang>.lproj/pass.strings``, ``manifest.json`` (the
SHA-1 of every other file) and ``signature`` (a detached CMS signature over the manifest bytes).

Why the zip is written by hand: the entries are stored (PNGs do not compress, and Wallet accepts
stored entries), in a fixed order, with a fixed timestamp (1980-01-01) and fixed attributes, so two
builds of one card differ only in ``signature``. Static images (icon, logo) and stamp strips are
hashed once and kept with their SHA-1 and CRC-32, so a build hashes only pass.json and the strings
and pays for one signature. ``zipfile`` would recompute the CRC of every image on every build.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import images
from ..errors import PassBuildError
from ..model import Card, CardTemplate, progress
from .credentials import SigningCredentials
from .media import (
    APPLE_ICON_FILES,
    APPLE_LOGO_FILES,
    APPLE_SCALES,
    APPLE_STRIP_FILES,
    PKPASS_MIME_TYPE,
    PKPASSES_MIME_TYPE,
)
from .passjson import check_web_service_url, compose_pass
from .signing import sign_manifest

__all__ = [
    "MAX_PKPASSES",
    "MAX_PKPASSES_BYTES",
    "PKPASSES_MIME_TYPE",
    "PKPASS_MIME_TYPE",
    "PassBuilder",
    "build_pkpasses",
]

MAX_PKPASSES = 10  # Apple's limit for one .pkpasses bundle
MAX_PKPASSES_BYTES = 150 * 1024 * 1024  # Apple's size limit for a .pkpasses bundle


# -- the zip, stored, deterministic ---------------------------------------------------------------

_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01, the earliest a zip can say
_DOS_TIME = 0
_VERSION = 20  # 2.0: what stored entries need
_MADE_BY = (3 << 8) | _VERSION  # "Unix", so the attributes below are read as a mode
_FILE_ATTRIBUTES = (0o100644 & 0xFFFF) << 16  # regular file, rw-r--r--
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_MAX_ZIP32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Entry:
    """One file of a bundle with what the manifest and the zip need, computed once."""

    name: str
    data: bytes
    sha1: str
    crc: int

    @classmethod
    def of(cls, name: str, data: bytes) -> Entry:
        return cls(name, data, hashlib.sha1(data).hexdigest(), zlib.crc32(data))


def write_stored_zip(entries: Sequence[Entry]) -> bytes:
    """A zip of ``entries`` in the given order, stored, with fixed timestamps and attributes."""
    parts: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for e in entries:
        name = e.name.encode("utf-8")
        size = len(e.data)
        if size > _MAX_ZIP32 or offset > _MAX_ZIP32:
            raise PassBuildError(f"{e.name} is too large for a pass")
        # Bit 11: the name is UTF-8 (names here are ASCII, but say it for lproj folders).
        flags = 0x0800 if not name.isascii() else 0
        header = _LOCAL.pack(
            0x04034B50, _VERSION, flags, 0, _DOS_TIME, _DOS_DATE, e.crc, size, size, len(name), 0
        )
        parts.append(header)
        parts.append(name)
        parts.append(e.data)
        central.append(
            _CENTRAL.pack(
                0x02014B50,
                _MADE_BY,
                _VERSION,
                flags,
                0,
                _DOS_TIME,
                _DOS_DATE,
                e.crc,
                size,
                size,
                len(name),
                0,
                0,
                0,
                0,
                _FILE_ATTRIBUTES,
                offset,
            )
            + name
        )
        offset += len(header) + len(name) + size
    directory = b"".join(central)
    if offset > _MAX_ZIP32 or len(entries) > 0xFFFF:
        raise PassBuildError("bundle too large for a zip without ZIP64")
    end = _END.pack(0x06054B50, 0, 0, len(entries), len(entries), len(directory), offset, 0)
    parts.append(directory)
    parts.append(end)
    return b"".join(parts)


def _entries_size(entries: tuple[Entry, ...]) -> int:
    # The PNG bytes are shared with the cached pictures; count a small share for the hashes.
    return 64 * len(entries)


class _SignedPasses:
    """Signed passes by content digest: a thread-safe LRU of at most ``size`` (0: none)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("cache size must be >= 0")
        self.size = size
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        if self.size == 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


# -- building -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unsigned:
    entries: tuple[Entry, ...]  # every file but manifest.json and signature, in zip order
    manifest: bytes
    digest: str


def _dumps(value: Any) -> bytes:
    # Sorted keys and no spaces: the same pass always gives the same bytes (and hash).
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


class PassBuilder:
    """Builds signed ``.pkpass`` files of stamp cards with one set of credentials.

    ``pass_type_identifier`` and ``team_identifier`` default to the certificate's UID and OU;
    values that disagree with it are refused (Wallet would reject every pass). Identical content
    gives the identical signed pass from a small LRU cache (``cache_size`` passes), keyed by
    :meth:`content_digest`, so an unchanged pass is never re-signed. Thread-safe.
    """

    def __init__(
        self,
        credentials: SigningCredentials,
        *,
        web_service_url: str | None = None,
        allow_http: bool = False,
        pass_type_identifier: str | None = None,
        team_identifier: str | None = None,
        cache_size: int = 64,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        for given, expected, what, part in (
            (pass_type_identifier, credentials.pass_type_identifier, "pass type identifier", "UID"),
            (team_identifier, credentials.team_identifier, "team identifier", "OU"),
        ):
            if given is not None and given != expected:
                raise PassBuildError(
                    f"{what} {given!r} does not match the signing certificate's {part} "
                    f"{expected!r}: Wallet rejects such passes (use the certificate made for "
                    f"{given!r}, or leave the {what} out)"
                )
        if web_service_url is not None:
            check_web_service_url(web_service_url, allow_http=allow_http)
        self.credentials = credentials
        self.pass_type_identifier = credentials.pass_type_identifier
        self.team_identifier = credentials.team_identifier
        self.web_service_url = web_service_url
        self.allow_http = allow_http
        self._clock = clock
        self._signed = _SignedPasses(cache_size)

    # -- images, hashed once -----------------------------------------------------------------

    # The entries live in the one image cache, beside the pictures they hash: evicted and
    # cleared with them, and rendered once under concurrent builds.
    def _static_entries(self, template: CardTemplate) -> tuple[Entry, ...]:
        def make() -> tuple[Entry, ...]:
            out = [
                Entry.of(name, images.apple_icon(template, s))
                for name, s in zip(APPLE_ICON_FILES, APPLE_SCALES, strict=True)
            ]
            for name, s in zip(APPLE_LOGO_FILES, APPLE_SCALES, strict=True):
                logo = images.apple_logo(template, s)
                if logo is not None:
                    out.append(Entry.of(name, logo))
            return tuple(out)

        key = (*images.template_key(template), "pkpass-static-entries")
        return images.cached(key, make, _entries_size)

    def _strip_entries(self, template: CardTemplate, stamps: int) -> tuple[Entry, ...]:
        def make() -> tuple[Entry, ...]:
            return tuple(
                Entry.of(name, images.apple_strip(template, stamps, s))
                for name, s in zip(APPLE_STRIP_FILES, APPLE_SCALES, strict=True)
            )

        key = (*images.template_key(template), "pkpass-strip-entries", stamps)
        return images.cached(key, make, _entries_size)

    # -- the unsigned content ----------------------------------------------------------------

    def _unsigned(self, template: CardTemplate, card: Card, notify: bool) -> _Unsigned:
        content = compose_pass(
            template,
            card,
            pass_type_identifier=self.pass_type_identifier,
            team_identifier=self.team_identifier,
            web_service_url=self.web_service_url,
            allow_http=self.allow_http,
            notify=notify,
        )
        stamps = progress(template, card).stamps
        entries = [
            Entry.of("pass.json", _dumps(content.pass_json)),
            *self._static_entries(template),
            *self._strip_entries(template, stamps),
        ]
        entries.extend(
            Entry.of(f"{lang}.lproj/pass.strings", data)
            for lang, data in sorted(content.strings.items())
        )
        manifest = _dumps({e.name: e.sha1 for e in entries})
        return _Unsigned(tuple(entries), manifest, hashlib.sha256(manifest).hexdigest())

    def content_digest(self, template: CardTemplate, card: Card, *, notify: bool = True) -> str:
        """SHA-256 (hex) of the unsigned content: changes exactly when the pass would (so the
        notification decision is part of it: pass.json differs in its changeMessage fields).

        The web service uses it as a cache key and ETag.
        """
        return self._unsigned(template, card, notify).digest

    def build(self, template: CardTemplate, card: Card, *, notify: bool = True) -> bytes:
        """The signed ``.pkpass`` of ``card`` (cached by content). ``notify=False``: the change
        it carries was silent, so no field has a ``changeMessage`` (see :mod:`.passjson`)."""
        unsigned = self._unsigned(template, card, notify)
        cached = self._signed.get(unsigned.digest)
        if cached is not None:
            return cached
        when = self._clock() if self._clock is not None else None
        signature = sign_manifest(self.credentials, unsigned.manifest, signing_time=when)
        data = write_stored_zip(
            (
                *unsigned.entries,
                Entry.of("manifest.json", unsigned.manifest),
                Entry.of("signature", signature),
            )
        )
        self._signed.put(unsigned.digest, data)
        return data


# -- .pkpasses ------------------------------------------------------------------------------------


def _serial_of(data: bytes, index: int) -> str:
    """The serial number in a .pkpass (for its name inside the bundle)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info = archive.getinfo("pass.json")
            if info.file_size > 1024 * 1024:
                raise ValueError("pass.json too large")
            value = json.loads(archive.read(info))
        serial = value["serialNumber"]
        if not isinstance(serial, str) or not serial:
            raise ValueError("no serial number")
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise PassBuildError(f"pass {index + 1} is not a readable .pkpass ({exc})") from None
    # Keep the name a plain file name whatever the serial holds.
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in serial)[:64] or "pass"


def build_pkpasses(passes: Sequence[bytes]) -> bytes:
    """A ``.pkpasses`` bundle (MIME :data:`PKPASSES_MIME_TYPE`) of 1 to 10 signed passes.

    Entries are named ``<serial>.pkpass`` in the given order.
    """
    if not passes:
        raise PassBuildError("a .pkpasses bundle needs at least one pass")
    if len(passes) > MAX_PKPASSES:
        raise PassBuildError(
            f"a .pkpasses bundle holds at most {MAX_PKPASSES} passes, got {len(passes)}"
        )
    total = sum(len(p) for p in passes)
    if total > MAX_PKPASSES_BYTES:
        raise PassBuildError(
            f"a .pkpasses bundle may be at most {MAX_PKPASSES_BYTES // (1024 * 1024)} MB, "
            f"these passes are {total / (1024 * 1024):.1f} MB"
        )
    entries = []
    used: set[str] = set()
    for i, data in enumerate(passes):
        base = _serial_of(bytes(data), i)
        name, n = f"{base}.pkpass", 2
        while name in used:
            name, n = f"{base}-{n}.pkpass", n + 1
        used.add(name)
        entries.append(Entry(name, bytes(data), "", zlib.crc32(data)))
    return write_stored_zip(entries)
