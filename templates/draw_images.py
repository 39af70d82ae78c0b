"""Draw every PNG the sample templates use, with Pillow only (no fonts, plain vector shapes).

Run from the repository root::

    .venv/bin/python templates/draw_images.py

The output is deterministic: the same Pillow version writes the same bytes, so re-running it
leaves ``git status`` clean. Shapes are drawn at 4x and scaled down with LANCZOS, which gives
smooth edges without relying on anti-aliasing in ImageDraw.

coffee/: icon.png (660 px square, a cup with steam), logo.png (480x150, cup + bean + bars);
         stamps use the library's built-in drawing.
salon/:  icon.png (660 px square, scissors), logo.png (450x150, flower + comb),
         stamp_filled.png / stamp_empty.png (192 px squares, a flower in a disc / outlined).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SUPERSAMPLE = 4

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]

# The colours repeat the template.toml values (kept in sync by hand; both are tiny).
COFFEE_BG: RGB = (0x3E, 0x24, 0x17)
COFFEE_FG: RGB = (0xFF, 0xF7, 0xEA)
COFFEE_LABEL: RGB = (0xE8, 0xB8, 0x7A)
SALON_BG: RGB = (0xFB, 0xEF, 0xF4)
SALON_FG: RGB = (0x4A, 0x15, 0x38)
SALON_LABEL: RGB = (0x8C, 0x2F, 0x63)

Painter = Callable[[ImageDraw.ImageDraw, float, float], None]


def rgba(c: RGB, a: int = 255) -> RGBA:
    return (c[0], c[1], c[2], a)


def render(width: int, height: int, background: RGBA, paint: Painter) -> Image.Image:
    """Paint at SUPERSAMPLE x the size (coordinates in target pixels), then scale down."""
    big = Image.new("RGBA", (width * SUPERSAMPLE, height * SUPERSAMPLE), background)
    paint(ImageDraw.Draw(big), float(SUPERSAMPLE), 0.0)
    return big.resize((width, height), Image.Resampling.LANCZOS)


def save(img: Image.Image, path: Path, *, keep_alpha: bool) -> None:
    """Fixed encoder settings and no metadata, so re-running writes identical bytes."""
    out = img if keep_alpha else img.convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path, "PNG", optimize=False, compress_level=9)
    print(f"wrote {path.relative_to(HERE.parent)} ({out.size[0]}x{out.size[1]})")


def ellipse_points(
    cx: float, cy: float, rx: float, ry: float, angle: float, n: int = 96
) -> list[tuple[float, float]]:
    """Points of an ellipse rotated by ``angle`` radians (ImageDraw has no rotated ellipse)."""
    ca, sa = math.cos(angle), math.sin(angle)
    pts = []
    for i in range(n):
        t = 2 * math.pi * i / n
        x, y = rx * math.cos(t), ry * math.sin(t)
        pts.append((cx + x * ca - y * sa, cy + x * sa + y * ca))
    return pts


def wave(x: float, y0: float, y1: float, amp: float, n: int = 40) -> list[tuple[float, float]]:
    """A vertical sine line (a wisp of steam)."""
    return [
        (x + amp * math.sin(2 * math.pi * i / n * 1.25), y0 + (y1 - y0) * i / n)
        for i in range(n + 1)
    ]


# -- coffee -------------------------------------------------------------------------------------


def cup(
    d: ImageDraw.ImageDraw,
    s: float,
    ox: float,
    oy: float,
    size: float,
    color: RGBA,
    hole: RGBA,
    steam: bool = True,
) -> None:
    """A coffee cup on a saucer in the box (ox, oy, size x size), in target pixels scaled by s."""

    def p(x: float, y: float) -> tuple[float, float]:
        return ((ox + x * size) * s, (oy + y * size) * s)

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (*p(x0, y0), *p(x1, y1))

    w = size * s
    # handle: a thick ring on the right of the body
    d.ellipse(box(0.58, 0.42, 0.86, 0.66), outline=color, width=round(0.05 * w))
    # body, with a rounded bottom
    d.rounded_rectangle(box(0.20, 0.36, 0.72, 0.76), radius=0.14 * w, fill=color)
    d.rectangle(box(0.20, 0.36, 0.72, 0.50), fill=color)
    # coffee surface
    d.ellipse(box(0.24, 0.33, 0.68, 0.41), fill=hole)
    d.ellipse(box(0.20, 0.31, 0.72, 0.41), outline=color, width=round(0.025 * w))
    # saucer
    d.ellipse(box(0.08, 0.76, 0.86, 0.86), fill=color)
    if steam:
        for x in (0.34, 0.46, 0.58):
            d.line(
                [p(x, y) for x, y in wave(x, 0.08, 0.26, 0.025)],
                fill=color,
                width=round(0.035 * w),
                joint="curve",
            )


def coffee_icon(d: ImageDraw.ImageDraw, s: float, _: float) -> None:
    # Google shows the program logo as a circle: keep the cup inside the inscribed circle.
    cup(d, s, 150, 150, 360, rgba(COFFEE_FG), rgba(COFFEE_BG))


def coffee_logo(d: ImageDraw.ImageDraw, s: float, _: float) -> None:
    fg, label = rgba(COFFEE_FG), rgba(COFFEE_LABEL)
    cup(d, s, 6, 6, 138, fg, (0, 0, 0, 0))
    # a coffee bean
    d.polygon(ellipse_points(200 * s, 75 * s, 34 * s, 22 * s, -0.6), fill=label)
    d.line(
        [(x * s, y * s) for x, y in ((178, 92), (195, 78), (205, 72), (222, 58))],
        fill=(0, 0, 0, 0),
        width=round(5 * s),
        joint="curve",
    )
    # an abstract word mark: three rounded bars
    for i, (length, color) in enumerate(((230, fg), (180, label), (120, fg))):
        y = 40 + i * 28
        d.rounded_rectangle(
            (250 * s, y * s, (250 + length) * s, (y + 16) * s), radius=8 * s, fill=color
        )


# -- salon --------------------------------------------------------------------------------------


def flower(
    d: ImageDraw.ImageDraw,
    s: float,
    cx: float,
    cy: float,
    r: float,
    petal: RGBA,
    centre: RGBA,
    outline: int = 0,
) -> None:
    """Six petals around a disc. With ``outline`` > 0 only the outlines are drawn."""
    for i in range(6):
        a = i * math.pi / 3
        pts = ellipse_points(
            (cx + 0.5 * r * math.cos(a)) * s,
            (cy + 0.5 * r * math.sin(a)) * s,
            0.5 * r * s,
            0.26 * r * s,
            a,
        )
        if outline:
            d.line([*pts, pts[0]], fill=petal, width=round(outline * s), joint="curve")
        else:
            d.polygon(pts, fill=petal)
    c = 0.2 * r
    if outline:
        d.ellipse(
            ((cx - c) * s, (cy - c) * s, (cx + c) * s, (cy + c) * s),
            outline=centre,
            width=round(outline * s),
        )
    else:
        d.ellipse(((cx - c) * s, (cy - c) * s, (cx + c) * s, (cy + c) * s), fill=centre)


def scissors(d: ImageDraw.ImageDraw, s: float, _: float) -> None:
    fg = rgba(SALON_FG)
    cx, cy = 320.0, 330.0
    for sign in (1, -1):
        # a blade runs from its handle (low, on one side) through the pivot to its tip (high,
        # on the other side); widest at the pivot, pointed at the tip
        hx, hy = cx - sign * 78, 440.0
        tx, ty = cx + sign * 120, 120.0
        ux, uy = tx - hx, ty - hy
        length = math.hypot(ux, uy)
        nx, ny = -uy / length, ux / length
        half = {0.0: 14.0, 0.35: 24.0, 0.7: 14.0, 1.0: 0.0}
        left = [(hx + ux * t + nx * w, hy + uy * t + ny * w) for t, w in half.items()]
        right = [(hx + ux * t - nx * w, hy + uy * t - ny * w) for t, w in half.items()]
        d.polygon([(x * s, y * s) for x, y in left + right[::-1]], fill=fg)
    # handles: two rings
    for hx in (cx - 92, cx + 92):
        d.ellipse(((hx - 62) * s, 420 * s, (hx + 62) * s, 544 * s), outline=fg, width=round(22 * s))
    # pivot
    d.ellipse(((cx - 12) * s, (cy - 12) * s, (cx + 12) * s, (cy + 12) * s), fill=rgba(SALON_BG))


def salon_icon(d: ImageDraw.ImageDraw, s: float, o: float) -> None:
    scissors(d, s, o)
    flower(d, s, 510, 165, 68, rgba(SALON_LABEL), rgba(SALON_FG))


def salon_logo(d: ImageDraw.ImageDraw, s: float, _: float) -> None:
    fg, label = rgba(SALON_FG), rgba(SALON_LABEL)
    flower(d, s, 75, 75, 68, label, fg)
    # a comb: a spine and teeth
    d.rounded_rectangle((170 * s, 38 * s, 440 * s, 62 * s), radius=10 * s, fill=fg)
    for i in range(14):
        x = 180 + i * 18.5
        d.rounded_rectangle((x * s, 55 * s, (x + 9) * s, 112 * s), radius=4 * s, fill=fg)


def stamp_filled(d: ImageDraw.ImageDraw, s: float, _: float) -> None:
    d.ellipse((4 * s, 4 * s, 188 * s, 188 * s), fill=rgba(SALON_FG))
    flower(d, s, 96, 96, 70, rgba(SALON_BG), rgba(SALON_LABEL))


def stamp_empty(d: ImageDraw.ImageDraw, s: float, _: float) -> None:
    d.ellipse((6 * s, 6 * s, 186 * s, 186 * s), outline=rgba(SALON_LABEL), width=round(8 * s))
    flower(d, s, 96, 96, 62, rgba(SALON_LABEL, 70), rgba(SALON_LABEL, 140))


def main() -> None:
    clear: RGBA = (0, 0, 0, 0)
    save(
        render(660, 660, rgba(COFFEE_BG), coffee_icon),
        HERE / "coffee" / "icon.png",
        keep_alpha=False,
    )
    save(render(480, 150, clear, coffee_logo), HERE / "coffee" / "logo.png", keep_alpha=True)
    save(
        render(660, 660, rgba(SALON_BG), salon_icon), HERE / "salon" / "icon.png", keep_alpha=False
    )
    save(render(450, 150, clear, salon_logo), HERE / "salon" / "logo.png", keep_alpha=True)
    save(
        render(192, 192, clear, stamp_filled), HERE / "salon" / "stamp_filled.png", keep_alpha=True
    )
    save(render(192, 192, clear, stamp_empty), HERE / "salon" / "stamp_empty.png", keep_alpha=True)


if __name__ == "__main__":
    main()
