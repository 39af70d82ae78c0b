"""Pictures of a card: the stamp grid (Apple strip, Google hero) and the derived brand images.

One drawing code path renders the grid of filled and empty stamps for any size, so Apple's strip
(375x123 pt at @1x/@2x/@3x) and Google's hero (1032x336 px) always look alike. Output is
deterministic: shapes are drawn at 4x and scaled down with LANCZOS (no fonts, nothing from the
system), and PNGs are written by :func:`encode_png` with fixed settings and no metadata, so the
same inputs give the same bytes and a content-addressed name (:func:`image_name`) can be cached
forever by Apple, Google and any CDN.

Every image is kept in one bounded, thread-safe LRU cache keyed by the template's id, version
and ``design_digest``: a fleet of cards needs only M+1 grids per size and template, each drawn
once, even when many threads ask for a cold picture at the same time (one renders, the others
wait for it). The grid's stamps are drawn once per template and size (an all-empty and an
all-filled layer) and pasted, so a cold grid costs a copy, a few pastes and the PNG encoding.
Other modules keep what they derive from these pictures in the same cache (:func:`cached`).
"""

from __future__ import annotations

import io
import math
import re
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Final, NamedTuple, TypeVar

from PIL import Image, ImageChops, ImageDraw

from .errors import ImageError, NotFoundError
from .model import CardTemplate, Color

#: Bump whenever the drawing or encoding changes: it is part of every image name, so clients
#: holding the old pictures fetch the new ones (old names then answer NotFoundError).
RENDERER_VERSION: Final = 2  # 2: zlib level 6, "filtered" strategy (same pixels, 3x faster)

APPLE_STRIP_POINTS: Final = (375, 123)
APPLE_ICON_POINTS: Final = (29, 29)
APPLE_LOGO_POINTS: Final = (160, 50)  # the box a logo must fit in
APPLE_SCALES: Final = (1, 2, 3)
GOOGLE_HERO_SIZE: Final = (1032, 336)
GOOGLE_PROGRAM_LOGO_SIZE: Final = 660

#: Largest grid we agree to draw; bounds memory and CPU per call.
MAX_GRID_SIZE: Final = (4096, 2048)

# Drawing constants (fractions of the picture or of one stamp).
_SUPERSAMPLE = 4
_MARGIN_X = 0.04  # safe margin left and right, of the width
_MARGIN_Y = 0.08  # safe margin top and bottom, of the height
_STAMP_FILL = 0.82  # stamp diameter as a fraction of its cell
_MAX_ROWS = 3
_RING_CONTRAST = 3.0  # WCAG minimum for graphics: below it the ring uses the foreground colour
# Level 6 with the "filtered" strategy: about 5% larger than level 9 on the grids, 3x faster.
_ZLIB_LEVEL = 6

# -- deterministic PNG --------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _deflate(data: bytes) -> bytes:
    z = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, 15, 9, zlib.Z_FILTERED)
    return z.compress(data) + z.flush()


def encode_png(image: Image.Image) -> bytes:
    """Encode an RGB or RGBA image as PNG with fixed settings: IHDR, one IDAT, IEND; no
    timestamps, text, gamma or physical-size chunks; the "Sub" filter on every row; zlib level 9.

    Written here rather than by Pillow's encoder so the bytes do not depend on Pillow's filter
    heuristics or defaults (they changed between releases); the zlib settings are fixed too."""
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    width, height = image.size
    channels = len(image.getbands())
    # Sub filter: each byte minus the byte one pixel to the left, modulo 256 (computed in C by
    # Pillow: the image minus itself shifted right by one pixel, the first column kept as is).
    shifted = Image.new(image.mode, image.size, (0,) * channels)
    shifted.paste(image.crop((0, 0, width - 1, height)), (1, 0))
    filtered = ImageChops.subtract_modulo(image, shifted).tobytes()
    stride = width * channels
    rows = b"".join(b"\x01" + filtered[y * stride : (y + 1) * stride] for y in range(height))
    colour_type = 6 if channels == 4 else 2
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", _deflate(rows)),
            _chunk(b"IEND", b""),
        )
    )


# -- the cache ----------------------------------------------------------------------------------


T = TypeVar("T")


def _size_of(value: Any) -> int:
    return len(value) if isinstance(value, bytes | bytearray) else 1024


class _ImageCache:
    """A bounded LRU of rendered pictures (and what is derived from them). Bounded by total
    bytes, not entries, because a strip@3x weighs ten times an icon. A lock makes it safe from
    threads (asyncio.to_thread, web workers); rendering happens outside that lock, and one
    render runs per key at a time (single flight): concurrent callers of a cold key wait for
    the first one's result instead of rendering it again. A render that raises stores nothing;
    the next caller renders afresh."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._flights: dict[Hashable, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def _lookup(self, key: Hashable) -> tuple[bool, Any]:
        found = self._data.get(key)
        if found is None:
            return False, None
        self._data.move_to_end(key)
        self.hits += 1
        return True, found[0]

    def get(
        self, key: Hashable, render: Callable[[], T], size_of: Callable[[T], int] = _size_of
    ) -> T:
        with self._lock:
            hit, value = self._lookup(key)
            if hit:
                return value  # type: ignore[no-any-return]
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:  # one render per key; the others wait here, then find it cached
            with self._lock:
                hit, value = self._lookup(key)
                if hit:
                    return value  # type: ignore[no-any-return]
                self.misses += 1
            try:
                data = render()
            finally:
                with self._lock:
                    self._flights.pop(key, None)
            size = size_of(data)
            with self._lock:
                self._data[key] = (data, size)
                self._bytes += size
                while self._bytes > self.max_bytes and len(self._data) > 1:
                    _, (_, old) = self._data.popitem(last=False)
                    self._bytes -= old
        return data

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    def info(self) -> dict[str, int]:
        with self._lock:
            return {
                "entries": len(self._data),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
            }


_CACHE = _ImageCache(max_bytes=64 * 1024 * 1024)
#: The stamp layers a grid is pasted from (two per template and size): kept apart so the
#: picture counts of cache_info() stay one per picture.
_LAYERS = _ImageCache(max_bytes=64 * 1024 * 1024)


def cached(key: Hashable, render: Callable[[], T], size_of: Callable[[T], int] = _size_of) -> T:
    """``render()``'s result, from the image cache when ``key`` is there.

    For values derived from pictures (e.g. a pass builder's hashed zip entries), so they live,
    are bounded and are evicted with the pictures. Thread-safe, one render per key at a time.
    Start ``key`` with :func:`template_key` and a name of your own."""
    return _CACHE.get(key, render, size_of)


def clear_cache() -> None:
    """Forget every rendered image (tests, or after changing RENDERER_VERSION in a REPL)."""
    _CACHE.clear()
    _LAYERS.clear()


def cache_info() -> dict[str, int]:
    """Entries, bytes, hits and misses of the image cache."""
    return _CACHE.info()


def template_key(template: CardTemplate) -> tuple[str, int, str]:
    """What identifies a template's pictures: id, version and design digest."""
    return (template.id, template.version, template.design_digest)


_template_key = template_key


# -- the stamp grid -----------------------------------------------------------------------------


class GridLayout(NamedTuple):
    """Rows, stamp diameter and the top-left corner of every stamp (in pixels)."""

    rows: int
    diameter: int
    positions: tuple[tuple[int, int], ...]


def grid_layout(slots: int, width: int, height: int) -> GridLayout:
    """Place ``slots`` stamps in ``width`` x ``height`` inside safe margins.

    The row count (1 to 3) is the one giving the largest stamps, fewer rows on a tie: on Apple's
    and Google's 3:1 pictures that is one row up to 6 stamps, two rows up to 20 and three for
    more. Rows hold ceil(slots / rows) stamps; a shorter last row is centred."""
    mx, my = width * _MARGIN_X, height * _MARGIN_Y
    inner_w, inner_h = width - 2 * mx, height - 2 * my
    best_rows, best_cell = 1, 0.0
    for rows in range(1, _MAX_ROWS + 1):
        cols = math.ceil(slots / rows)
        cell = min(inner_w / cols, inner_h / rows)
        if cell > best_cell + 1e-9:
            best_rows, best_cell = rows, cell
    rows, cell = best_rows, best_cell
    cols = math.ceil(slots / rows)
    diameter = max(1, int(cell * _STAMP_FILL))
    top = (height - rows * cell) / 2
    positions = []
    for i in range(slots):
        row, col = divmod(i, cols)
        in_row = min(cols, slots - row * cols)
        left = (width - in_row * cell) / 2
        x = left + col * cell + (cell - diameter) / 2
        y = top + row * cell + (cell - diameter) / 2
        positions.append((round(x), round(y)))
    return GridLayout(rows, diameter, tuple(positions))


def _star(cx: float, cy: float, outer: float, inner: float) -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        r = outer if i % 2 == 0 else inner
        a = -math.pi / 2 + i * math.pi / 5
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def _builtin_stamp(
    diameter: int, *, filled: bool, reward: bool, ink: Color, paper: Color, ring: Color
) -> Image.Image:
    """The built-in stamp: a disc with a check mark (a star on a reward step) when filled, an
    outlined ring (with a star on a reward step) when empty. Shapes differ, not only colours, so
    the grid reads without colour vision."""
    s = diameter * _SUPERSAMPLE
    big = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(big)
    if filled:
        d.ellipse((0, 0, s - 1, s - 1), fill=(*ink, 255))
        mark = (*paper, 255)
        if reward:
            d.polygon(_star(s / 2, s / 2, 0.32 * s, 0.14 * s), fill=mark)
        else:
            w = max(1, round(0.11 * s))
            pts = [(0.28 * s, 0.53 * s), (0.44 * s, 0.68 * s), (0.73 * s, 0.36 * s)]
            d.line(pts, fill=mark, width=w, joint="curve")
            for x, y in (pts[0], pts[-1]):  # round caps
                d.ellipse((x - w / 2, y - w / 2, x + w / 2, y + w / 2), fill=mark)
    else:
        # at least ~1.5 px wide in the final picture so it survives the 1x strip
        w = max(round(1.5 * _SUPERSAMPLE), round(0.08 * s))
        d.ellipse((0, 0, s - 1, s - 1), outline=(*ring, 255), width=w)
        if reward:
            d.polygon(_star(s / 2, s / 2, 0.28 * s, 0.12 * s), fill=(*ring, 255))
    return big.resize((diameter, diameter), Image.Resampling.LANCZOS)


def _custom_stamp(
    png: bytes, diameter: int, *, reward: bool, ink: Color, paper: Color
) -> Image.Image:
    """A template's stamp image scaled to ``diameter``; on a reward step a small badge (a star
    on a disc, top right) marks it, as the built-in stamps do with their star."""
    with Image.open(io.BytesIO(png)) as img:
        tile = img.convert("RGBA").resize((diameter, diameter), Image.Resampling.LANCZOS)
    if reward:
        s = diameter * _SUPERSAMPLE
        big = Image.new("RGBA", (s, s), (0, 0, 0, 0))
        d = ImageDraw.Draw(big)
        r = 0.19 * s
        cx, cy = s - r - 1, r + 1
        d.ellipse(
            (cx - r, cy - r, cx + r, cy + r),
            fill=(*ink, 255),
            outline=(*paper, 255),
            width=max(1, round(0.03 * s)),
        )
        d.polygon(_star(cx, cy, 0.72 * r, 0.31 * r), fill=(*paper, 255))
        tile.alpha_composite(big.resize((diameter, diameter), Image.Resampling.LANCZOS))
    return tile


def _draw_grid_reference(
    template: CardTemplate, stamps: int, width: int, height: int
) -> Image.Image:
    """Every stamp of the grid drawn in turn: the reference :func:`_draw_grid` must match."""
    design = template.design
    slots = template.stamps_required
    layout = grid_layout(slots, width, height)
    background = design.background_color
    ring = (
        design.label_color
        if design.label_color.contrast(background) >= _RING_CONTRAST
        else design.foreground_color
    )
    steps = {r.at for r in template.rewards}
    tiles: dict[tuple[bool, bool], Image.Image] = {}

    def tile(filled: bool, reward: bool) -> Image.Image:
        custom = design.stamp_filled if filled else design.stamp_empty
        key = (filled, reward)
        if key not in tiles:
            tiles[key] = (
                _custom_stamp(
                    custom,
                    layout.diameter,
                    reward=reward,
                    ink=design.foreground_color,
                    paper=background,
                )
                if custom is not None
                else _builtin_stamp(
                    layout.diameter,
                    filled=filled,
                    reward=reward,
                    ink=design.foreground_color,
                    paper=background,
                    ring=ring,
                )
            )
        return tiles[key]

    canvas = Image.new("RGBA", (width, height), (*background, 255))
    for i, (x, y) in enumerate(layout.positions):
        canvas.alpha_composite(tile(i < stamps, (i + 1) in steps), (x, y))
    return canvas.convert("RGB")


def _layer(template: CardTemplate, filled: bool, width: int, height: int) -> Image.Image:
    """The grid with every stamp empty (or every stamp filled), reward stars in place; drawn
    once per template and size. Read-only: callers copy or crop it."""
    stamps = template.stamps_required if filled else 0

    def draw() -> Image.Image:
        return _draw_grid_reference(template, stamps, width, height)

    key = (*template_key(template), "layer", filled, width, height)
    return _LAYERS.get(key, draw, lambda img: img.width * img.height * 4)  # 4 bytes a pixel


def _draw_grid(template: CardTemplate, stamps: int, width: int, height: int) -> bytes:
    """The grid with ``stamps`` filled: the empty layer with the first ``stamps`` cells taken
    from the filled layer. Cells do not overlap (a stamp fills 82% of its cell), so the pixels
    equal drawing each stamp in turn (:func:`_draw_grid_reference`)."""
    layout = grid_layout(template.stamps_required, width, height)
    if stamps <= 0:
        return encode_png(_layer(template, False, width, height))
    if stamps >= template.stamps_required:
        return encode_png(_layer(template, True, width, height))
    canvas = _layer(template, False, width, height).copy()
    filled = _layer(template, True, width, height)
    d = layout.diameter
    for x, y in layout.positions[:stamps]:
        box = (x, y, x + d, y + d)
        canvas.paste(filled.crop(box), box)
    return encode_png(canvas)


def _check_size(width: int, height: int) -> None:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
        raise ImageError(f"grid size must be integers, got {width!r:.20} x {height!r:.20}")
    if not (0 < width <= MAX_GRID_SIZE[0] and 0 < height <= MAX_GRID_SIZE[1]):
        raise ImageError(
            f"grid size {width}x{height} out of range (1x1 to "
            f"{MAX_GRID_SIZE[0]}x{MAX_GRID_SIZE[1]})"
        )


def _clamp(template: CardTemplate, stamps: int) -> int:
    if not isinstance(stamps, int) or isinstance(stamps, bool):
        raise ImageError(f"stamp count must be an integer, got {type(stamps).__name__}")
    # A round never holds more than stamps_required, but draw a full card rather than fail.
    return max(0, min(stamps, template.stamps_required))


def render_stamp_grid(template: CardTemplate, stamps: int, width: int, height: int) -> bytes:
    """The PNG (RGB) of the template's grid with ``stamps`` of ``stamps_required`` filled.

    ``stamps`` is clamped to 0..stamps_required. Cached per (template id, version,
    design_digest, stamps, width, height): a warm call is a dictionary look-up."""
    stamps = _clamp(template, stamps)
    _check_size(width, height)
    key = (*_template_key(template), "grid", stamps, width, height)
    return _CACHE.get(key, lambda: _draw_grid(template, stamps, width, height))


def _check_scale(scale: int) -> None:
    if type(scale) is not int or scale not in APPLE_SCALES:  # 2.0 and True are not scales
        raise ImageError(f"scale must be 1, 2 or 3, got {scale!r}")


def apple_strip(template: CardTemplate, stamps: int, scale: int) -> bytes:
    """Apple's store-card strip: 375x123 pt at ``scale`` (1, 2, 3)."""
    _check_scale(scale)
    w, h = APPLE_STRIP_POINTS
    return render_stamp_grid(template, stamps, w * scale, h * scale)


def google_hero(template: CardTemplate, stamps: int) -> bytes:
    """Google's hero image: the same grid at 1032x336 px."""
    return render_stamp_grid(template, stamps, *GOOGLE_HERO_SIZE)


# -- derived brand images -----------------------------------------------------------------------


def _open(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as img:
        img.load()
        has_alpha = "A" in img.getbands() or "transparency" in img.info
        return img.convert("RGBA" if has_alpha else "RGB")


def _resized(png: bytes, size: tuple[int, int]) -> bytes:
    img = _open(png)
    if img.size != size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    return encode_png(img)


def apple_icon(template: CardTemplate, scale: int) -> bytes:
    """Apple's icon (29x29 pt at ``scale``) from ``design.icon``, transparency kept."""
    _check_scale(scale)
    size = (APPLE_ICON_POINTS[0] * scale, APPLE_ICON_POINTS[1] * scale)
    key = (*_template_key(template), "icon", scale)
    return _CACHE.get(key, lambda: _resized(template.design.icon, size))


def logo_size(width: int, height: int, scale: int) -> tuple[int, int]:
    """The largest size with the logo's aspect ratio fitting 160x50 pt at ``scale``."""
    box_w, box_h = APPLE_LOGO_POINTS[0] * scale, APPLE_LOGO_POINTS[1] * scale
    factor = min(box_w / width, box_h / height)
    return max(1, min(box_w, round(width * factor))), max(1, min(box_h, round(height * factor)))


def apple_logo(template: CardTemplate, scale: int) -> bytes | None:
    """Apple's logo fitting 160x50 pt at ``scale``, aspect ratio kept; None without a logo."""
    _check_scale(scale)
    logo = template.design.logo
    if logo is None:
        return None

    def render() -> bytes:
        with Image.open(io.BytesIO(logo)) as img:
            size = logo_size(*img.size, scale)
        return _resized(logo, size)

    return _CACHE.get((*_template_key(template), "logo", scale), render)


def google_program_logo(template: CardTemplate) -> bytes:
    """Google's programLogo: ``design.icon`` as a 660 px square, RGB. Transparency is flattened
    onto the background colour because Google shows the logo on its own (white) circle."""

    def render() -> bytes:
        img = _open(template.design.icon)
        if img.mode == "RGBA":
            flat = Image.new("RGBA", img.size, (*template.design.background_color, 255))
            flat.alpha_composite(img)
            img = flat
        size = (GOOGLE_PROGRAM_LOGO_SIZE, GOOGLE_PROGRAM_LOGO_SIZE)
        if img.size != size:
            img = img.resize(size, Image.Resampling.LANCZOS)
        return encode_png(img.convert("RGB"))

    return _CACHE.get((*_template_key(template), "program-logo"), render)


# -- content-addressed names --------------------------------------------------------------------

#: Kinds :func:`image_name` knows; those in STAMP_KINDS need a stamp count.
KINDS: Final = (
    "hero",
    "strip@1x",
    "strip@2x",
    "strip@3x",
    "icon@1x",
    "icon@2x",
    "icon@3x",
    "logo@1x",
    "logo@2x",
    "logo@3x",
    "logo",
    "program-logo",
)
STAMP_KINDS: Final = frozenset({"hero", "strip@1x", "strip@2x", "strip@3x"})
_MAX_NAME = 200
_NAME = re.compile(
    r"(?P<id>[a-z0-9][a-z0-9_-]{0,62})/v(?P<version>[1-9][0-9]{0,8})/"
    r"(?P<digest>[0-9a-f]{16})-r(?P<renderer>[1-9][0-9]{0,5})/"
    r"(?:hero-(?P<hero>0|[1-9][0-9]?)"
    r"|strip-(?P<strip>0|[1-9][0-9]?)@(?P<strip_scale>[123])x"
    r"|(?P<still>icon|logo)@(?P<still_scale>[123])x"
    r"|(?P<plain>logo|program-logo))\.png"
)


def image_name(template: CardTemplate, kind: str, stamps: int | None = None) -> str:
    """The content-addressed relative path of one image, e.g.
    ``coffee/v1/<design_digest>-r1/hero-3.png`` or ``coffee/v1/<...>/strip-3@2x.png``.

    The name changes whenever the picture does (design, stamps, renderer version), so it can be
    served with ``Cache-Control: immutable``. ``stamps`` is needed for "hero" and "strip@Nx" and
    clamped like :func:`render_stamp_grid` (equal pictures share a name). "logo" is the @3x logo
    (for web pages) and raises NotFoundError when the template has no logo."""
    if kind not in KINDS:
        raise ImageError(f"unknown image kind {kind!r}; expected one of {', '.join(KINDS)}")
    prefix = f"{template.id}/v{template.version}/{template.design_digest}-r{RENDERER_VERSION}/"
    if kind in STAMP_KINDS:
        if stamps is None:
            raise ImageError(f"image kind {kind!r} needs a stamp count")
        n = _clamp(template, stamps)
        if kind == "hero":
            return f"{prefix}hero-{n}.png"
        return f"{prefix}strip-{n}@{kind[-2:]}.png"
    if stamps is not None:
        raise ImageError(f"image kind {kind!r} takes no stamp count")
    if kind.startswith("logo") and template.design.logo is None:
        raise NotFoundError(f"template {template.key} has no logo")
    return f"{prefix}{kind}.png"


def render_named(template: CardTemplate, name: str) -> bytes:
    """The PNG for a name made by :func:`image_name` for this template, as it is now.

    Names are validated strictly (never used as file paths). A name that is malformed, of
    another template, version or design, of an older renderer, or with more stamps than the
    template holds raises NotFoundError."""
    match = _NAME.fullmatch(name) if isinstance(name, str) and len(name) <= _MAX_NAME else None
    if match is None:
        raise NotFoundError("no such image")
    g = match.groupdict()
    stamps: int | None = None
    if g["hero"] is not None:
        kind, stamps = "hero", int(g["hero"])
    elif g["strip"] is not None:
        kind, stamps = f"strip@{g['strip_scale']}x", int(g["strip"])
    elif g["still"] is not None:
        kind = f"{g['still']}@{g['still_scale']}x"
    else:
        kind = g["plain"]
    if stamps is not None and stamps > template.stamps_required:
        raise NotFoundError(f"no such image: {template.key} has {template.stamps_required} stamps")
    if image_name(template, kind, stamps) != name:  # other template, version, design or renderer
        raise NotFoundError("no such image (not current for this template)")
    return _render_kind(template, kind, stamps)


def _render_kind(template: CardTemplate, kind: str, stamps: int | None) -> bytes:
    if kind == "hero":
        return google_hero(template, stamps or 0)
    if kind.startswith("strip@"):
        return apple_strip(template, stamps or 0, int(kind[6]))
    if kind.startswith("icon@"):
        return apple_icon(template, int(kind[5]))
    if kind == "program-logo":
        return google_program_logo(template)
    logo = apple_logo(template, 3 if kind == "logo" else int(kind[5]))
    if logo is None:  # image_name already refused this; kept for type narrowing
        raise NotFoundError(f"template {template.key} has no logo")
    return logo
