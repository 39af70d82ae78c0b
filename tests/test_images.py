"""The stamp grid and derived images: golden bytes, sizes, layout, cache, names."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from passkit_stamps import images
from passkit_stamps.errors import ImageError, NotFoundError
from passkit_stamps.images import (
    APPLE_STRIP_POINTS,
    GOOGLE_HERO_SIZE,
    KINDS,
    RENDERER_VERSION,
    STAMP_KINDS,
    apple_icon,
    apple_logo,
    apple_strip,
    cache_info,
    clear_cache,
    encode_png,
    google_hero,
    google_program_logo,
    grid_layout,
    image_name,
    render_named,
    render_stamp_grid,
)
from passkit_stamps.model import CardTemplate, Color

# SHA-256 of the PNG bytes. These pin the drawing and the encoder: when a change to images.py
# alters them on purpose, bump RENDERER_VERSION (names change with it) and update the digests.
# Renderer 2 (zlib level 6, filtered) changed the bytes, not the pixels: see GOLDEN_PIXELS.
GOLDEN = {
    ("coffee", "strip@2x", 0): "9b9a89f2e4a3d958c17d2a9bdb6b3011715a232781b21b7bcf9afb616a64b26f",
    ("coffee", "strip@2x", 3): "af0035d413f6efd82d7c7bc399399c6ec87c05f5a4923b4c53b34efd46bd7abb",
    ("coffee", "strip@2x", 8): "d24fffec353108a0b5c549f31facbc8d5b71d8fab2bac7dffc0ed2739be944bd",
    ("coffee", "hero", 5): "3555f88c479605e0b1f6a2536f41627e89b432661e876e489bf1caa42f9a7dea",
    ("salon", "strip@2x", 5): "5b38df6def51f940bfa69fefc4cf769defc4355c9ac8fdd3b619db24cf99de93",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


def variant(template: CardTemplate, **changes: Any) -> CardTemplate:
    """A validated copy with top-level or design changes (``design__x=...``). Built with
    model_validate, not model_copy, so the cached design_digest is computed afresh."""
    data = template.model_dump()
    for key, value in changes.items():
        if key.startswith("design__"):
            data["design"][key.removeprefix("design__")] = value
        else:
            data[key] = value
    return CardTemplate.model_validate(data)


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    clear_cache()


# -- golden bytes and determinism ---------------------------------------------------------------


@pytest.mark.parametrize(("template_id", "kind", "stamps"), list(GOLDEN))
def test_golden_digests(
    request: pytest.FixtureRequest, template_id: str, kind: str, stamps: int
) -> None:
    template = request.getfixturevalue(template_id)
    data = render_named(template, image_name(template, kind, stamps))
    assert sha(data) == GOLDEN[(template_id, kind, stamps)]


def test_renders_are_deterministic_across_fresh_renders(coffee: CardTemplate) -> None:
    first = apple_strip(coffee, 3, 3)
    clear_cache()
    second = apple_strip(coffee, 3, 3)
    assert first is not second  # really rendered twice
    assert first == second
    clear_cache()
    assert google_program_logo(coffee) == google_program_logo(coffee)


def test_png_has_only_the_essential_chunks_and_no_metadata(coffee: CardTemplate) -> None:
    for data in (apple_strip(coffee, 2, 1), google_hero(coffee, 2), apple_icon(coffee, 2)):
        assert chunks(data) == [b"IHDR", b"IDAT", b"IEND"]
        assert decode(data).info == {}


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_encode_png_round_trips_pixels(mode: str) -> None:
    img = Image.new("RGBA", (37, 11), (0, 0, 0, 0))
    for x in range(37):
        for y in range(11):
            img.putpixel((x, y), ((x * 7) % 256, (y * 23) % 256, (x * y) % 256, (x + y * 9) % 256))
    source = img.convert(mode)
    back = decode(encode_png(source))
    expected = source if mode in ("RGB", "RGBA") else source.convert(back.mode)
    assert back.mode == expected.mode
    assert back.tobytes() == expected.tobytes()


# -- sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_apple_sizes_at_every_scale(coffee: CardTemplate, salon: CardTemplate, scale: int) -> None:
    for template in (coffee, salon):
        strip = decode(apple_strip(template, 4, scale))
        assert strip.size == (375 * scale, 123 * scale)
        assert strip.mode == "RGB"
        assert decode(apple_icon(template, scale)).size == (29 * scale, 29 * scale)
        logo_bytes = apple_logo(template, scale)
        assert logo_bytes is not None
        w, h = decode(logo_bytes).size
        assert w <= 160 * scale and h <= 50 * scale
        assert w == 160 * scale or h == 50 * scale  # fills the box along one side
    # aspect ratio kept: coffee's logo is 480x150 (3.2:1), salon's 450x150 (3:1)
    assert decode(apple_logo(coffee, scale) or b"").size == (160 * scale, 50 * scale)
    assert decode(apple_logo(salon, scale) or b"").size == (150 * scale, 50 * scale)


def test_google_sizes(coffee: CardTemplate, salon: CardTemplate) -> None:
    for template in (coffee, salon):
        hero = decode(google_hero(template, 3))
        assert hero.size == GOOGLE_HERO_SIZE == (1032, 336)
        assert hero.mode == "RGB"
        logo = decode(google_program_logo(template))
        assert logo.size == (660, 660)
        assert logo.mode == "RGB"


def test_no_logo_gives_none_and_no_name(coffee: CardTemplate) -> None:
    bare = variant(coffee, design__logo=None)
    assert apple_logo(bare, 2) is None
    with pytest.raises(NotFoundError):
        image_name(bare, "logo")
    with pytest.raises(NotFoundError):
        render_named(
            bare, image_name(coffee, "logo").replace(coffee.design_digest, bare.design_digest)
        )


def test_bad_scales_and_sizes_are_refused(coffee: CardTemplate) -> None:
    for scale in (0, 4, -1):
        with pytest.raises(ImageError, match="scale"):
            apple_strip(coffee, 1, scale)
        with pytest.raises(ImageError, match="scale"):
            apple_icon(coffee, scale)
        with pytest.raises(ImageError, match="scale"):
            apple_logo(coffee, scale)
    for width, height in ((0, 10), (10, 0), (-5, 10), (100_000, 100), (100, 100_000)):
        with pytest.raises(ImageError, match="out of range"):
            render_stamp_grid(coffee, 1, width, height)


# -- layout and drawing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slots", "rows"), [(2, 1), (5, 1), (6, 1), (7, 2), (8, 2), (10, 2), (20, 2), (21, 3), (30, 3)]
)
def test_rows_depend_on_the_stamp_count(slots: int, rows: int) -> None:
    for size in (APPLE_STRIP_POINTS, GOOGLE_HERO_SIZE, (1125, 369)):
        layout = grid_layout(slots, *size)
        assert layout.rows == rows
        assert len({y for _, y in layout.positions}) == rows
        assert len(layout.positions) == slots


@pytest.mark.parametrize("slots", [2, 3, 6, 7, 8, 9, 10, 13, 20, 30])
def test_stamps_stay_inside_safe_margins_and_never_overlap(slots: int) -> None:
    for width, height in (APPLE_STRIP_POINTS, GOOGLE_HERO_SIZE, (750, 246)):
        layout = grid_layout(slots, width, height)
        d = layout.diameter
        assert d >= 28  # still a legible stamp at @1x with 30 slots
        for x, y in layout.positions:
            assert width * 0.04 - 1 <= x and x + d <= width - width * 0.04 + 1
            assert height * 0.08 - 1 <= y and y + d <= height - height * 0.08 + 1
        for (x1, y1), (x2, y2) in itertools.combinations(layout.positions, 2):
            assert abs(x1 - x2) >= d or abs(y1 - y2) >= d


def test_odd_last_row_is_centred() -> None:
    layout = grid_layout(7, 1032, 336)
    top = [x for x, y in layout.positions if y == layout.positions[0][1]]
    bottom = [x for x, y in layout.positions if y != layout.positions[0][1]]
    assert len(top) == 4 and len(bottom) == 3
    d = layout.diameter
    assert abs((top[0] + top[-1] + d) / 2 - 516) <= 1
    assert abs((bottom[0] + bottom[-1] + d) / 2 - 516) <= 1


def stamp_pixel(template: CardTemplate, img: Image.Image, slot: int, fx: float, fy: float) -> Any:
    layout = grid_layout(template.stamps_required, *img.size)
    x, y = layout.positions[slot]
    return img.getpixel((x + round(fx * layout.diameter), y + round(fy * layout.diameter)))


def test_builtin_stamps_filled_then_empty(coffee: CardTemplate) -> None:
    img = decode(apple_strip(coffee, 3, 3))
    fg = tuple(coffee.design.foreground_color)
    bg = tuple(coffee.design.background_color)
    for slot in range(8):
        # inside the disc, away from the check mark: ink when filled, background when empty
        expected = fg if slot < 3 else bg
        assert stamp_pixel(coffee, img, slot, 0.5, 0.15) == expected, slot
    # the empty ring is drawn in the label colour (it has enough contrast here)
    assert stamp_pixel(coffee, img, 5, 0.5, 0.02) == tuple(coffee.design.label_color)


def test_reward_step_is_marked_differently(coffee: CardTemplate) -> None:
    img = decode(apple_strip(coffee, 0, 3))
    bg = tuple(coffee.design.background_color)
    # centre of an empty stamp: background, except the reward step (8) which holds a star
    assert stamp_pixel(coffee, img, 6, 0.5, 0.5) == bg
    assert stamp_pixel(coffee, img, 7, 0.5, 0.5) == tuple(coffee.design.label_color)


def test_ring_falls_back_to_foreground_when_the_label_colour_is_not_legible(
    coffee: CardTemplate,
) -> None:
    dim = variant(coffee, design__label_color="#4a2c1d")  # almost the background
    assert Color(0x4A, 0x2C, 0x1D).contrast(coffee.design.background_color) < 3
    img = decode(apple_strip(dim, 0, 3))
    assert stamp_pixel(dim, img, 2, 0.5, 0.02) == tuple(coffee.design.foreground_color)


def test_custom_stamp_images_are_used(salon: CardTemplate) -> None:
    builtin = variant(salon, design__stamp_filled=None, design__stamp_empty=None)
    assert apple_strip(salon, 4, 2) != apple_strip(builtin, 4, 2)
    img = decode(apple_strip(salon, 4, 3))
    # the salon's filled stamp is a plum disc with a light flower; its centre is the label pink
    assert stamp_pixel(salon, img, 0, 0.5, 0.5) == tuple(salon.design.label_color)
    assert stamp_pixel(salon, img, 0, 0.5, 0.06) == tuple(salon.design.foreground_color)
    # empty stamps show the light outlined flower, not the plum disc
    assert stamp_pixel(salon, img, 6, 0.5, 0.06) != tuple(salon.design.foreground_color)


def test_stamps_are_clamped(coffee: CardTemplate) -> None:
    assert apple_strip(coffee, 99, 1) is apple_strip(coffee, 8, 1)
    assert apple_strip(coffee, -4, 1) is apple_strip(coffee, 0, 1)
    assert image_name(coffee, "hero", 12) == image_name(coffee, "hero", 8)


def test_every_stamp_count_gives_a_different_picture(salon: CardTemplate) -> None:
    digests = {sha(google_hero(salon, n)) for n in range(salon.stamps_required + 1)}
    assert len(digests) == salon.stamps_required + 1


# -- the cache ----------------------------------------------------------------------------------


def test_cache_returns_the_same_object(coffee: CardTemplate) -> None:
    first = apple_strip(coffee, 3, 2)
    assert apple_strip(coffee, 3, 2) is first
    assert render_stamp_grid(coffee, 3, 750, 246) is first
    assert render_named(coffee, image_name(coffee, "strip@2x", 3)) is first
    assert apple_icon(coffee, 3) is apple_icon(coffee, 3)
    assert google_program_logo(coffee) is google_program_logo(coffee)
    info = cache_info()
    assert info["misses"] == 3
    assert info["hits"] == 5


def test_cache_keys_include_the_design(coffee: CardTemplate) -> None:
    other = variant(coffee, design__background_color="#102030")
    assert other.design_digest != coffee.design_digest
    assert apple_strip(other, 3, 1) != apple_strip(coffee, 3, 1)


def test_a_fleet_needs_one_render_per_stamp_count(coffee: CardTemplate) -> None:
    for _ in range(3):
        for n in range(coffee.stamps_required + 1):
            google_hero(coffee, n)
    assert cache_info()["misses"] == coffee.stamps_required + 1


def test_concurrent_first_renders_agree_on_one_object(coffee: CardTemplate) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: google_hero(coffee, 4), range(12)))
    assert all(r is results[0] for r in results)


def test_cache_is_bounded_by_bytes_and_evicts_the_least_recently_used() -> None:
    cache = images._ImageCache(max_bytes=250)
    cache.get("a", lambda: b"a" * 100)
    cache.get("b", lambda: b"b" * 100)
    cache.get("a", lambda: b"never")  # "a" is now the most recent
    cache.get("c", lambda: b"c" * 100)  # over 250 bytes: "b" goes
    assert cache.info()["entries"] == 2
    assert cache.info()["bytes"] == 200
    assert cache.get("a", lambda: b"new") == b"a" * 100
    assert cache.get("b", lambda: b"new") == b"new"


# -- names --------------------------------------------------------------------------------------


def test_image_name_shape(coffee: CardTemplate) -> None:
    prefix = f"coffee/v1/{coffee.design_digest}-r{RENDERER_VERSION}/"
    assert image_name(coffee, "hero", 3) == prefix + "hero-3.png"
    assert image_name(coffee, "strip@2x", 0) == prefix + "strip-0@2x.png"
    assert image_name(coffee, "icon@3x") == prefix + "icon@3x.png"
    assert image_name(coffee, "logo") == prefix + "logo.png"
    assert image_name(coffee, "program-logo") == prefix + "program-logo.png"


def test_image_name_changes_with_stamps_design_version_and_renderer(
    coffee: CardTemplate, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {image_name(coffee, "hero", n) for n in range(9)}
    assert len(names) == 9
    base = image_name(coffee, "hero", 3)
    assert image_name(variant(coffee, design__foreground_color="#ffffff"), "hero", 3) != base
    assert image_name(variant(coffee, version=2), "hero", 3) != base
    monkeypatch.setattr(images, "RENDERER_VERSION", RENDERER_VERSION + 1)
    newer = image_name(coffee, "hero", 3)
    assert newer != base
    render_named(coffee, newer)
    with pytest.raises(NotFoundError):
        render_named(coffee, base)  # made by the previous renderer


def test_image_name_refuses_bad_arguments(coffee: CardTemplate) -> None:
    with pytest.raises(ImageError, match="unknown image kind"):
        image_name(coffee, "banner", 1)
    for kind in STAMP_KINDS:
        with pytest.raises(ImageError, match="needs a stamp count"):
            image_name(coffee, kind)
    with pytest.raises(ImageError, match="takes no stamp count"):
        image_name(coffee, "program-logo", 3)


def test_render_named_round_trips_every_kind(coffee: CardTemplate, salon: CardTemplate) -> None:
    for template in (coffee, salon):
        for kind in KINDS:
            counts = (0, 1, template.stamps_required) if kind in STAMP_KINDS else (None,)
            for n in counts:
                data = render_named(template, image_name(template, kind, n))
                assert data.startswith(b"\x89PNG")
    assert render_named(coffee, image_name(coffee, "hero", 5)) == google_hero(coffee, 5)
    assert render_named(coffee, image_name(coffee, "strip@1x", 2)) == apple_strip(coffee, 2, 1)
    assert render_named(coffee, image_name(coffee, "icon@2x")) == apple_icon(coffee, 2)
    assert render_named(coffee, image_name(coffee, "logo")) == apple_logo(coffee, 3)
    assert render_named(coffee, image_name(coffee, "logo@1x")) == apple_logo(coffee, 1)
    program = render_named(coffee, image_name(coffee, "program-logo"))
    assert program == google_program_logo(coffee)


def test_render_named_rejects_bad_names(coffee: CardTemplate, salon: CardTemplate) -> None:
    good = image_name(coffee, "hero", 3)
    prefix = good.removesuffix("hero-3.png")
    wrong_digest = "0" * 16 if coffee.design_digest != "0" * 16 else "1" * 16
    bad = [
        "",
        "../x",
        "x",
        "garbage\x00.png",
        "/" + good,
        good + "/",
        good + "\n",
        good.upper(),
        good.replace(coffee.design_digest, wrong_digest),
        good.replace("/v1/", "/v2/"),
        good.replace("/v1/", "/v01/"),
        good.replace("coffee/", "salon/"),
        good.replace(f"-r{RENDERER_VERSION}/", f"-r{RENDERER_VERSION + 1}/"),
        prefix + "hero-9.png",  # more stamps than the card holds
        prefix + "hero-03.png",  # not the canonical spelling
        prefix + "hero--1.png",
        prefix + "hero.png",
        prefix + "strip-3@4x.png",
        prefix + "strip-3.png",
        prefix + "icon.png",
        prefix + "../../../etc/passwd",
        prefix + "hero-3.PNG",
        prefix + "hero-3.png?x=1",
        prefix + "x" * 1000 + ".png",
        image_name(salon, "hero", 3),
        image_name(salon, "hero", 10),
    ]
    for name in bad:
        with pytest.raises(NotFoundError):
            render_named(coffee, name)


# -- issue 12: cheap cold renders, one render per key under concurrency -------------------------

# SHA-256 of the decoded pixels, from the renderer before the cold-render speed-up: the faster
# path must draw exactly the same pictures (the PNG bytes may differ with the encoder settings).
GOLDEN_PIXELS = {
    ("coffee", "strip@2x", 0): "1078bee2319f2d5eae6149c19fd6706a0944491053856cd4cc71713adf8af18d",
    ("coffee", "strip@2x", 3): "1f1c12efa61e6a40be9fa732bc99c86e40f5561dcbd13b1babd5af548c2c7c30",
    ("coffee", "strip@2x", 8): "421d97ebc3ce4117ba9d4af263c203ce97051f7fcff603c9aa5ec8348a2c07bf",
    ("coffee", "hero", 5): "6c883cfd302f2abd8fa73b45a64a3fec8ee497e6a0f07d229400fdeb61722075",
    ("salon", "strip@2x", 5): "d3ba29d35bf759d8d17dae273f65cabbb8c731daa0fd90b0c28596c9a7832add",
    ("salon", "strip@1x", 10): "0ee73bf2d5446cd431eb3cc5cbc7cf60ac598b78f43e88eaeebeb1e438558c42",
    ("salon", "hero", 7): "7f6c796daa2f86bfa251ecee2d4de8c1a808989ba8276f6400bb1ea63c33773c",
}


@pytest.mark.parametrize(("template_id", "kind", "stamps"), list(GOLDEN_PIXELS))
def test_pictures_keep_their_pixels(
    request: pytest.FixtureRequest, template_id: str, kind: str, stamps: int
) -> None:
    template = request.getfixturevalue(template_id)
    img = decode(render_named(template, image_name(template, kind, stamps)))
    assert sha(img.tobytes()) == GOLDEN_PIXELS[(template_id, kind, stamps)]


def test_every_count_matches_a_full_drawing(salon: CardTemplate) -> None:
    # the fast path pastes prepared stamps; the reference draws every stamp of the grid
    for n in range(salon.stamps_required + 1):
        fast = decode(apple_strip(salon, n, 1)).tobytes()
        assert fast == images._draw_grid_reference(salon, n, 375, 123).tobytes(), n


def test_concurrent_callers_of_one_cold_key_render_it_once() -> None:
    import threading
    import time

    calls = []
    start = threading.Barrier(8)

    def render() -> bytes:
        calls.append(1)
        time.sleep(0.05)
        return b"png"

    def ask(_: int) -> bytes:
        start.wait()
        return images.cached(("test", "single-flight"), render)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(ask, range(8)))
    assert len(calls) == 1
    assert all(r is results[0] for r in results)


def test_concurrent_cold_strips_render_once(coffee: CardTemplate) -> None:
    import threading

    start = threading.Barrier(6)

    def ask(_: int) -> bytes:
        start.wait()
        return apple_strip(coffee, 5, 3)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(ask, range(6)))
    assert cache_info()["misses"] == 1


def test_a_failed_render_is_not_cached_and_others_retry() -> None:
    def fail() -> bytes:
        raise ImageError("no")

    with pytest.raises(ImageError):
        images.cached(("test", "fails"), fail)
    assert images.cached(("test", "fails"), lambda: b"ok") == b"ok"


# -- issue 8: bad arguments are library errors ---------------------------------------------------


ARG = st.none() | st.booleans() | st.integers(-5, 50) | st.floats() | st.text(max_size=5)


@settings(max_examples=200, deadline=None)
@given(stamps=ARG, scale=ARG, width=ARG, height=ARG, kind=ARG | st.sampled_from(images.KINDS))
def test_junk_arguments_raise_only_library_errors(
    coffee: CardTemplate, stamps: Any, scale: Any, width: Any, height: Any, kind: Any
) -> None:
    from passkit_stamps.errors import PasskitStampsError

    calls = (
        lambda: apple_strip(coffee, stamps, scale),
        lambda: google_hero(coffee, stamps),
        lambda: render_stamp_grid(coffee, stamps, width, height),
        lambda: apple_icon(coffee, scale),
        lambda: images.apple_logo(coffee, scale),
        lambda: image_name(coffee, kind, stamps),
        lambda: render_named(coffee, kind),
    )
    for call in calls:
        with contextlib.suppress(PasskitStampsError):
            call()


@pytest.mark.parametrize("scale", [2.0, True, "2"])
def test_a_scale_must_be_an_integer(coffee: CardTemplate, scale: Any) -> None:
    for render in (apple_strip, apple_icon):
        args = (coffee, 3, scale) if render is apple_strip else (coffee, scale)
        with pytest.raises(ImageError, match="scale"):
            render(*args)  # type: ignore[operator]
