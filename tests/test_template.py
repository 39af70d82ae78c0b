"""Loading card templates: the samples, and one TemplateError listing every problem of a bad one.

Bad templates are built in tmp_path from a copy of a sample, changed by plain text edits so each
test shows exactly which line is wrong.
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from passkit_stamps.errors import TemplateError
from passkit_stamps.model import (
    BUILTIN_LABELS,
    LABEL_KEYS,
    AfterLastReward,
    BarcodeFormat,
    CardTemplate,
    ExpiryKind,
    localized,
)

TOML = "template.toml"


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), "white").save(out, "PNG")
    return out.getvalue()


def make(
    tmp_path: Path,
    templates_dir: Path,
    sample: str = "coffee",
    edits: tuple[tuple[str, str], ...] = (),
    files: dict[str, bytes | Callable[[Path], object]] | None = None,
) -> Path:
    """A copy of a sample template with text ``edits`` (old, new) and replaced ``files``."""
    folder = tmp_path / sample
    shutil.copytree(templates_dir / sample, folder)
    text = (folder / TOML).read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, f"edit target not in the sample: {old!r}"
        text = text.replace(old, new, 1)
    (folder / TOML).write_text(text, encoding="utf-8")
    for name, content in (files or {}).items():
        if callable(content):
            content(folder / name)
        else:
            (folder / name).write_bytes(content)
    return folder


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(TemplateError) as info:
        CardTemplate.load(folder)
    assert str(info.value).count("\n") == len(info.value.problems)  # one line per problem
    return [str(p) for p in info.value.problems]


def only_problem(folder: Path) -> str:
    found = problems_of(folder)
    assert len(found) == 1, found
    return found[0]


# -- the samples --------------------------------------------------------------------------------


def test_coffee_sample(coffee: CardTemplate) -> None:
    assert (coffee.id, coffee.version, coffee.name) == ("coffee", 1, "Free Coffee")
    assert coffee.organization_name == "Bean There Coffee"
    assert coffee.stamps_required == 8
    assert [(r.at, r.title) for r in coffee.rewards] == [(8, "Free coffee")]
    assert coffee.after_last_reward is AfterLastReward.CARRY_OVER
    assert coffee.barcode_format is BarcodeFormat.QR
    assert coffee.languages == ("en",)
    assert coffee.expiry.kind is ExpiryKind.DAYS_AFTER_LAST_STAMP and coffee.expiry.days == 365
    assert coffee.limits.max_stamps_per_visit == 3
    assert coffee.website == "https://beanthere.example.com/"
    assert coffee.design.logo is not None
    assert coffee.design.stamp_filled is None and coffee.design.stamp_empty is None


def test_salon_sample(salon: CardTemplate) -> None:
    assert salon.id == "salon" and salon.stamps_required == 10
    assert [r.at for r in salon.rewards] == [5, 10]
    assert salon.languages == ("en", "de")
    assert localized(salon.rewards[0].title, "de", "en") == "Gratis Haarkur"
    assert localized(salon.rewards[1].title, "en", "en") == "Free beauty service"
    assert salon.barcode_format in (BarcodeFormat.PDF417, BarcodeFormat.QR)
    assert salon.design.stamp_filled is not None and salon.design.stamp_empty is not None
    assert salon.label("progress_label", "de") == BUILTIN_LABELS["de"]["progress_label"]


@pytest.mark.parametrize("name", ["coffee", "salon"])
def test_sample_colours_are_legible(request: pytest.FixtureRequest, name: str) -> None:
    template: CardTemplate = request.getfixturevalue(name)
    d = template.design
    assert d.foreground_color.contrast(d.background_color) >= 4.5
    assert d.label_color.contrast(d.background_color) >= 4.5


@pytest.mark.parametrize("name", ["coffee", "salon"])
def test_sample_images_meet_their_roles(templates_dir: Path, name: str) -> None:
    folder = templates_dir / name
    with Image.open(folder / "icon.png") as icon:
        assert icon.size[0] == icon.size[1] >= 660
    with Image.open(folder / "logo.png") as logo:
        assert logo.size[0] >= 150 and logo.size[1] >= 150


def test_sample_images_are_the_drawing_script_output(templates_dir: Path, tmp_path: Path) -> None:
    """The committed PNGs are what templates/draw_images.py draws (re-run it after editing)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("draw_images", templates_dir / "draw_images.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.HERE = tmp_path
    shutil.copytree(templates_dir, tmp_path, dirs_exist_ok=True)
    before = {p: p.read_bytes() for p in tmp_path.glob("*/*.png")}
    module.main()
    for path, data in before.items():
        img_now, img_then = Image.open(path), Image.open(io.BytesIO(data))
        assert img_now.size == img_then.size
        assert img_now.tobytes() == img_then.tobytes(), path.name


def test_every_label_has_a_builtin_translation() -> None:
    for language, labels in BUILTIN_LABELS.items():
        assert tuple(labels) == LABEL_KEYS, language
        assert "%@" in labels["progress_change_message"]


# -- one problem at a time ------------------------------------------------------------------------


def test_missing_key(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, edits=(('name = "Free Coffee"\n', ""),))
    assert only_problem(folder) == "template.toml: name: missing key"


def test_missing_stamps_required_reports_only_that(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, edits=(("stamps_required = 8\n", ""),))
    assert only_problem(folder) == "template.toml: stamps_required: missing key"


def test_missing_section(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, edits=(("[design]", "[designs]"),))
    assert problems_of(folder) == [
        "template.toml: design: missing key",
        "template.toml: designs: unknown key",
    ]


@pytest.mark.parametrize(
    ("edit", "place"),
    [
        (('name = "Free Coffee"\n', 'name = "Free Coffee"\ncolour = "red"\n'), "colour"),
        (('icon = "icon.png"\n', 'icon = "icon.png"\nbanner = "b.png"\n'), "design.banner"),
        (("at = 8\n", "at = 8\npoints = 3\n"), "rewards[0].points"),
        (("days = 365\n", "days = 365\nhours = 2\n"), "expiry.hours"),
        (("max_stamps_per_visit = 3\n", "max_per_day = 3\n"), "limits.max_per_day"),
        (('how_to_earn = "', 'footer = "x"\nhow_to_earn = "'), "texts.en.footer"),
    ],
)
def test_unknown_key(
    tmp_path: Path, templates_dir: Path, edit: tuple[str, str], place: str
) -> None:
    folder = make(tmp_path, templates_dir, edits=(edit,))
    assert only_problem(folder) == f"template.toml: {place}: unknown key"


@pytest.mark.parametrize(
    ("edit", "place"),
    [
        (("stamps_required = 8", 'stamps_required = "eight"'), "stamps_required"),
        (("version = 1", "version = 1.5"), "version"),
        (("at = 8", "at = [8]"), "rewards[0].at"),
        (("at = 8", 'at = "8"'), "rewards[0].at"),
        (("stamps_required = 8", "stamps_required = 8.0"), "stamps_required"),
        (('website = "https://beanthere.example.com/"', "website = 5"), "website"),
        (
            ("max_stamps_per_visit = 3", "max_stamps_per_visit = true"),
            "limits.max_stamps_per_visit",
        ),
        (("days = 365", 'days = "365"'), "expiry.days"),
        (
            ('after_last_reward = "carry_over"', 'after_last_reward = "forever"'),
            "after_last_reward",
        ),
        (('barcode_format = "qr"', 'barcode_format = "ean13"'), "barcode_format"),
    ],
)
def test_wrong_type_or_value(
    tmp_path: Path, templates_dir: Path, edit: tuple[str, str], place: str
) -> None:
    folder = make(tmp_path, templates_dir, edits=(edit,))
    assert only_problem(folder).startswith(f"template.toml: {place}")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"#3e241"', "invalid colour '#3e241'"),
        ('"brown"', "invalid colour 'brown'"),
        ('"rgb(300, 0, 0)"', "each channel must be 0 to 255"),
        ("5", "invalid colour 5"),
    ],
)
def test_invalid_colour(tmp_path: Path, templates_dir: Path, value: str, reason: str) -> None:
    folder = make(tmp_path, templates_dir, edits=(('"#3e2417"', value),))
    problem = only_problem(folder)
    assert problem.startswith("template.toml: design.background_color: ")
    assert reason in problem


def test_colours_in_both_notations_load(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, edits=(('"#3e2417"', '"rgb(62, 36, 23)"'),))
    assert CardTemplate.load(folder).design.background_color.hex() == "#3e2417"


def test_missing_image(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, edits=(('logo = "logo.png"', 'logo = "nope.png"'),))
    assert only_problem(folder) == "template.toml: design.logo: image file 'nope.png' not found"


def test_missing_icon_file_is_not_also_reported_missing(
    tmp_path: Path, templates_dir: Path
) -> None:
    folder = make(tmp_path, templates_dir, files={"icon.png": lambda p: p.unlink()})
    assert only_problem(folder) == "template.toml: design.icon: image file 'icon.png' not found"


def test_icon_key_missing(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, edits=(('icon = "icon.png"\n', ""),))
    assert only_problem(folder) == "template.toml: design.icon: missing key"


def test_unreadable_image(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(
        tmp_path,
        templates_dir,
        edits=(('logo = "logo.png"', 'logo = "images"'),),
        files={"images": lambda p: p.mkdir()},
    )
    assert only_problem(folder).startswith(
        "template.toml: design.logo: image file 'images' unreadable"
    )


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, "JPEG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("file", "content", "reason"),
    [
        ("logo.png", jpeg(300, 300), "not a PNG image"),
        ("icon.png", b"hello, I am text", "not a PNG image"),
        ("icon.png", b"", "not a PNG image"),
        ("logo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "unreadable PNG image"),
        ("logo.png", png(300, 300)[:60], "unreadable PNG image"),
    ],
)
def test_not_a_png_or_broken(
    tmp_path: Path, templates_dir: Path, file: str, content: bytes, reason: str
) -> None:
    folder = make(tmp_path, templates_dir, files={file: content})
    problem = only_problem(folder)
    assert problem.startswith(f"template.toml: design.{file.removesuffix('.png')}: {reason}")


@pytest.mark.parametrize(
    ("sample", "file", "size", "reason"),
    [
        ("coffee", "icon.png", (600, 600), "image too small for the icon: 600x600 px"),
        ("coffee", "logo.png", (149, 300), "image too small for the logo: 149x300 px"),
        ("coffee", "logo.png", (400, 100), "needs at least 150x150 px"),
        ("salon", "stamp_filled.png", (64, 64), "image too small for the stamp: 64x64 px"),
        ("coffee", "icon.png", (800, 660), "the icon must be square, got 800x660 px"),
        ("salon", "stamp_empty.png", (200, 100), "the stamp must be square"),
    ],
)
def test_image_too_small_or_not_square(
    tmp_path: Path,
    templates_dir: Path,
    sample: str,
    file: str,
    size: tuple[int, int],
    reason: str,
) -> None:
    folder = make(tmp_path, templates_dir, sample, files={file: png(*size)})
    problem = only_problem(folder)
    assert problem.startswith(f"template.toml: design.{file.removesuffix('.png')}: ")
    assert reason in problem


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (IHDR only): what a decompression bomb
    looks like before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bomb_is_a_template_problem(tmp_path: Path, templates_dir: Path) -> None:
    # Pillow raises DecompressionBombError (not an OSError) for such images: it must still
    # become a TemplateError naming the image, not a traceback.
    folder = make(tmp_path, templates_dir, files={"logo.png": huge_png_header(20_000, 20_000)})
    problem = only_problem(folder)
    assert problem.startswith("template.toml: design.logo: unreadable PNG image")


def test_transparent_images_are_fine(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, files={"icon.png": png(700, 700, "RGBA")})
    assert CardTemplate.load(folder).design.icon.startswith(b"\x89PNG")


@pytest.mark.parametrize("path", ["../coffee/icon.png", "/etc/passwd", "a/../../x.png"])
def test_image_path_escaping_the_folder(tmp_path: Path, templates_dir: Path, path: str) -> None:
    folder = make(tmp_path, templates_dir, edits=(('icon = "icon.png"', f'icon = "{path}"'),))
    assert only_problem(folder) == (
        f"template.toml: design.icon: image path {path!r} must stay inside the template folder"
    )


def test_reward_beyond_stamps_required(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, "salon", edits=(("at = 10", "at = 11"),))
    assert only_problem(folder) == "template.toml: rewards[1].at: must be <= stamps_required (10)"


def test_single_reward_beyond_stamps_required(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, edits=(("at = 8", "at = 9"),))
    assert only_problem(folder) == "template.toml: rewards[0].at: must be <= stamps_required (8)"


def test_last_reward_short_of_stamps_required(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, edits=(("at = 8", "at = 6"),))
    assert only_problem(folder) == (
        "template.toml: rewards[0].at: the last reward step must equal stamps_required (8)"
    )


def test_duplicate_reward_steps(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, "salon", edits=(("at = 5", "at = 10"),))
    assert problems_of(folder) == ["template.toml: rewards[1].at: duplicate reward step 10"]


def test_reward_steps_out_of_order(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, "salon", edits=(("at = 10", "at = 3"),))
    assert problems_of(folder) == [
        "template.toml: rewards[1].at: reward steps must be in increasing order",
        "template.toml: rewards[1].at: the last reward step must equal stamps_required (10)",
    ]


def test_no_rewards(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, edits=(("[[rewards]]", "[[reward]]"),))
    assert problems_of(folder) == [
        "template.toml: rewards: missing key",
        "template.toml: reward: unknown key",
    ]


def test_language_missing_a_text(tmp_path: Path, templates_dir: Path) -> None:
    german_terms = 'terms = "Ein Stempel pro bezahltem Termin.'
    text = (templates_dir / "salon" / TOML).read_text(encoding="utf-8")
    line = next(x for x in text.splitlines(keepends=True) if x.startswith(german_terms))
    folder = make(tmp_path, templates_dir, "salon", edits=((line, ""),))
    # only the missing text: the rewards' German titles are not reported as unlisted
    assert only_problem(folder) == "template.toml: texts.de.terms: missing key"


def test_reward_title_missing_a_language(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(
        tmp_path,
        templates_dir,
        "salon",
        edits=((', de = "Gratis Haarkur" }', " }"),),
    )
    assert only_problem(folder) == "template.toml: rewards[0].title: missing text for language 'de'"


def test_reward_title_in_an_unlisted_language(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(
        tmp_path,
        templates_dir,
        "salon",
        edits=((', de = "Gratis Haarkur" }', ', de = "Gratis Haarkur", fr = "Soin offert" }'),),
    )
    assert only_problem(folder) == (
        "template.toml: rewards[0].title.fr: language not listed under [texts]"
    )


def test_language_without_builtin_labels_must_give_every_label(
    tmp_path: Path, templates_dir: Path
) -> None:
    folder = make(
        tmp_path,
        templates_dir,
        edits=(("[expiry]", '[texts.fr]\nterms = "x"\nhow_to_earn = "y"\n\n[expiry]'),),
    )
    found = problems_of(folder)
    assert found == [
        f"template.toml: texts.fr.{key}: missing text (no built-in translation for 'fr')"
        for key in LABEL_KEYS
    ]


def test_not_a_language_code(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(
        tmp_path,
        templates_dir,
        edits=(("[expiry]", '[texts.english]\nterms = "x"\nhow_to_earn = "y"\n\n[expiry]'),),
    )
    assert "template.toml: texts.english: not a language code (e.g. 'en', 'de', 'pt-BR')" in (
        problems_of(folder)
    )


def test_text_template_syntax_error(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, edits=(('how_to_earn = "', 'how_to_earn = "{{ oops '),))
    problem = only_problem(folder)
    assert problem.startswith("template.toml: texts.en.how_to_earn: text template syntax error")


def test_change_message_needs_placeholder(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(
        tmp_path,
        templates_dir,
        edits=(('how_to_earn = "', 'progress_change_message = "New stamp"\nhow_to_earn = "'),),
    )
    assert only_problem(folder) == (
        "template.toml: texts.en.progress_change_message: must contain '%@'"
    )


def test_expiry_needs_days(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir, edits=(("days = 365\n", ""),))
    assert (
        only_problem(folder) == "template.toml: expiry: kind 'days_after_last_stamp' needs 'days'"
    )


def test_link_url_must_be_http(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(
        tmp_path,
        templates_dir,
        edits=(('url = "https://beanthere.example.com/menu"', 'url = "javascript:alert(1)"'),),
    )
    assert only_problem(folder).startswith("template.toml: links[0].url: ")


def test_bad_toml(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(
        tmp_path, templates_dir, edits=(("stamps_required = 8", "stamps_required = = 8"),)
    )
    problem = only_problem(folder)
    assert problem.startswith("template.toml: invalid TOML: ")
    assert "line 8" in problem


def test_toml_not_utf8(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir)
    (folder / TOML).write_bytes((folder / TOML).read_bytes() + b"\n# \xff\xfe\n")
    assert "unreadable" in only_problem(folder)


def test_missing_template_toml(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert only_problem(tmp_path / "empty") == f"{tmp_path / 'empty' / TOML}: file not found"


def test_missing_folder(tmp_path: Path) -> None:
    assert only_problem(tmp_path / "nowhere").endswith(": file not found")


# -- many problems at once ------------------------------------------------------------------------


def test_every_problem_is_reported_together(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(
        tmp_path,
        templates_dir,
        edits=(
            ('name = "Free Coffee"\n', 'name = "Free Coffee"\ncolour = "red"\n'),
            ('"#3e2417"', '"brown"'),
            ('logo = "logo.png"', 'logo = "nope.png"'),
            ("at = 8", "at = 9"),
            ("days = 365\n", ""),
        ),
        files={"icon.png": png(500, 400)},
    )
    with pytest.raises(TemplateError) as info:
        CardTemplate.load(folder)
    found = {str(p) for p in info.value.problems}
    assert found == {
        "template.toml: colour: unknown key",
        "template.toml: design.background_color: invalid colour 'brown': "
        "use '#rrggbb' or 'rgb(r, g, b)'",
        "template.toml: design.logo: image file 'nope.png' not found",
        "template.toml: design.icon: image too small for the icon: 500x400 px, "
        "needs at least 660x660 px",
        "template.toml: rewards[0].at: must be <= stamps_required (8)",
        "template.toml: expiry: kind 'days_after_last_stamp' needs 'days'",
    }
    message = str(info.value)
    assert message.startswith(f"invalid card template {folder} (6 problem(s)):")
    assert info.value.source == str(folder)


def test_from_mapping_without_folder_reports_image_names(coffee: CardTemplate) -> None:
    raw = coffee.model_dump()
    raw["design"]["icon"] = "icon.png"
    with pytest.raises(TemplateError) as info:
        CardTemplate.from_mapping(raw)
    assert [str(p) for p in info.value.problems] == [
        "template.toml: design.icon: image file 'icon.png' given without a template folder"
    ]


# -- issue 12: texts are rendered for representative cards when the template loads ------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("{{ remainig }}", "unknown variable 'remainig'"),
        ("{{ holder_name|truncate(1) }}", "truncate"),
        ("{{ range }}", "unknown variable 'range'"),
        # renders for a new card, fails mid-round (coffee: 4 of 8)
        ("{{ 100 // (stamps - 4) }}", "division"),
        # fails only with a long holder name
        ("{{ holder_name" + " ~ holder_name" * 10 + " }}", "longer than 2000"),
    ],
)
def test_a_text_that_cannot_render_is_refused_at_load(
    tmp_path: Path, templates_dir: Path, text: str, found: str
) -> None:
    old = (
        'next_reward_value = "{{ next_reward }} in {{ remaining }} '
        "{{ 'stamp' if remaining == 1 else 'stamps' }}\""
    )
    folder = make(tmp_path, templates_dir, edits=((old, f'next_reward_value = "{text}"'),))
    problem = only_problem(folder)
    assert problem.startswith("template.toml: texts.en.next_reward_value: "), problem
    assert found in problem


def test_every_language_is_rendered(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(
        tmp_path,
        templates_dir,
        "salon",
        edits=(("[texts.de]\n", '[texts.de]\nholder_label = "{{ holder_name|truncate(2) }}"\n'),),
    )
    assert "texts.de.holder_label" in only_problem(folder)


def test_check_texts_for_a_template_built_in_python(coffee: CardTemplate) -> None:
    texts = coffee.texts["en"].model_copy(update={"terms": "{{ remainig }}"})
    with pytest.raises(TemplateError, match=r"texts\.en\.terms: unknown variable 'remainig'"):
        CardTemplate.model_validate({**coffee.model_dump(), "texts": {"en": texts.model_dump()}})


def test_deeply_nested_text_is_one_problem(tmp_path: Path, templates_dir: Path) -> None:
    text = "{{ " + "(" * 300 + "1" + ")" * 300 + " }}"
    folder = make(tmp_path, templates_dir, edits=(('how_to_earn = "', f'how_to_earn = "{text}'),))
    problem = only_problem(folder)
    assert problem.startswith("template.toml: texts.en.how_to_earn: ")
    assert "nested too deeply" in problem


def test_long_default_chain_is_one_problem(tmp_path: Path, templates_dir: Path) -> None:
    text = "{{ " + "holder_name|default(" * 90 + "1" + ")" * 90 + " }}"
    folder = make(tmp_path, templates_dir, edits=(('how_to_earn = "', f'how_to_earn = "{text}'),))
    assert "texts.en.how_to_earn" in only_problem(folder)


def test_deeply_nested_toml_is_one_problem(tmp_path: Path, templates_dir: Path) -> None:
    nested = "[" * 5000 + "]" * 5000
    edit = ("version = 1\n", f"version = 1\nx = {nested}\n")
    folder = make(tmp_path, templates_dir, edits=(edit,))
    problem = only_problem(folder)
    assert problem.startswith("template.toml: ") and "nested too deeply" in problem


def test_oversized_template_toml_is_refused(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir)
    (folder / TOML).write_text((folder / TOML).read_text() + "#" * (2 * 1024 * 1024) + "\n")
    assert "larger than" in only_problem(folder)


# -- issue 12: template images are bounded, regular files inside the folder ---------------------


def big_png(width: int, height: int) -> bytes:
    """A real, small (compressed) PNG of many pixels: what the 13,000 x 13,000 attack used."""
    return png(width, height, "L")


def test_image_over_the_pixel_bound_is_refused(tmp_path: Path, templates_dir: Path) -> None:
    from passkit_stamps.model import MAX_IMAGE_PIXELS

    folder = make(tmp_path, templates_dir, files={"logo.png": big_png(5000, 4000)})
    problem = only_problem(folder)
    assert problem.startswith("template.toml: design.logo: ")
    assert f"{MAX_IMAGE_PIXELS:,}" in problem and "5000x4000" in problem


def test_image_over_the_file_size_bound_is_refused(tmp_path: Path, templates_dir: Path) -> None:
    from passkit_stamps.model import MAX_IMAGE_BYTES

    data = png(700, 700) + b"\0" * MAX_IMAGE_BYTES  # trailing junk after IEND
    folder = make(tmp_path, templates_dir, files={"icon.png": data})
    problem = only_problem(folder)
    assert problem.startswith("template.toml: design.icon: ")
    assert f"{MAX_IMAGE_BYTES:,} bytes" in problem


def test_oversized_png_bytes_in_python_are_refused(coffee: CardTemplate) -> None:
    raw = coffee.model_dump()
    raw["design"]["logo"] = big_png(5000, 4000)
    with pytest.raises(TemplateError, match=r"design\.logo: .*pixels"):
        CardTemplate.model_validate(raw)


@pytest.mark.parametrize("target", ["/dev/zero", "/etc/passwd"])
def test_image_symlink_out_of_the_folder_is_refused(
    tmp_path: Path, templates_dir: Path, target: str
) -> None:
    folder = make(tmp_path, templates_dir, files={"logo.png": lambda p: p.unlink()})
    (folder / "logo.png").symlink_to(target)
    problem = only_problem(folder)
    assert problem.startswith("template.toml: design.logo: ")
    assert "inside the template folder" in problem


def test_image_symlink_inside_the_folder_is_fine(tmp_path: Path, templates_dir: Path) -> None:
    folder = make(tmp_path, templates_dir)
    (folder / "logo.png").rename(folder / "real-logo.png")
    (folder / "logo.png").symlink_to("real-logo.png")
    assert CardTemplate.load(folder).design.logo is not None


def test_image_that_is_a_fifo_is_refused(tmp_path: Path, templates_dir: Path) -> None:
    import os

    folder = make(tmp_path, templates_dir, files={"logo.png": lambda p: p.unlink()})
    os.mkfifo(folder / "logo.png")
    problem = only_problem(folder)  # must not hang opening it
    assert "not a regular file" in problem


def test_check_revalidates_a_template_that_skipped_validation(coffee: CardTemplate) -> None:
    # model_copy(update=...) skips validation: publishing calls check() so nothing bypasses it
    texts = coffee.texts["en"].model_copy(update={"progress_value": "{{ remainig }}"})
    copied = coffee.model_copy(update={"texts": {"en": texts}})
    with pytest.raises(TemplateError, match=r"texts\.en\.progress_value: unknown variable"):
        copied.check()
    design = coffee.design.model_copy(update={"logo": big_png(5000, 4000)})
    with pytest.raises(TemplateError, match=r"design\.logo: .*pixels"):
        coffee.model_copy(update={"design": design}).check()
    coffee.check()  # a valid template passes


def test_a_stored_template_with_a_failing_text_still_loads(coffee: CardTemplate) -> None:
    # a template stored before the text checks must still load for serving (its texts fall back)
    raw = coffee.model_dump()
    raw["texts"]["en"]["next_reward_value"] = "{{ remainig }} {{ holder_name|truncate(1) }}"
    with pytest.raises(TemplateError):
        CardTemplate.model_validate(raw)
    stored = CardTemplate.model_validate(raw, context={"stored": True})
    assert stored.texts["en"].next_reward_value == raw["texts"]["en"]["next_reward_value"]
    raw["stamps_required"] = 99  # the rules are still checked
    with pytest.raises(TemplateError, match="stamps_required"):
        CardTemplate.model_validate(raw, context={"stored": True})


async def test_publishing_refuses_a_template_that_skipped_validation(service: Any) -> None:
    # issue 12 item 1: a text that cannot render must be refused at publish, not break every card
    coffee = await service.get_template("coffee", 1)
    texts = coffee.texts["en"].model_copy(update={"next_reward_value": "{{ remainig }}"})
    bad = coffee.model_copy(update={"version": 2, "texts": {"en": texts}})
    with pytest.raises(TemplateError, match=r"texts\.en\.next_reward_value: unknown variable"):
        await service.publish_template(bad)
