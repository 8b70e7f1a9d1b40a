"""--image-size forms, per-class geometry and the sizes that are refused."""

import pytest

from ssmad.data.geometry import (
    Geometry,
    aspect_mismatch,
    class_geometries,
    median_aspect,
    nearest_geometry,
    parse_size_rule,
)


@pytest.mark.parametrize("text,kind,shown", [("256", "square", "256"), ("1248x512", "fixed", "1248x512"),
                                             (" 64X96 ", "fixed", "64x96"), ("long:640", "long", "long:640")])
def test_parse_forms(text, kind, shown):
    rule = parse_size_rule(text)
    assert rule.kind == kind and str(rule) == shown
    assert parse_size_rule(str(rule)) == rule


def test_square_and_fixed_ignore_the_aspect():
    assert parse_size_rule("256").geometry_for(0.4) == Geometry(256, 256)
    assert parse_size_rule("1248x512").geometry_for(3.0) == Geometry(1248, 512)


def test_long_side_keeps_each_class_aspect():
    rule = parse_size_rule("long:640")
    kolektor = median_aspect([(500, 1240), (500, 1235), (500, 1270)])  # width, height
    assert kolektor == pytest.approx(500 / 1240)
    assert rule.geometry_for(kolektor) == Geometry(640, 256)  # 640 * 0.403 = 258 -> 256
    assert rule.geometry_for(1.0) == Geometry(640, 640)
    assert rule.geometry_for(4 / 3) == Geometry(480, 640)
    geometries = class_geometries(rule, {"bottle": 1.0, "kolektorsdd": kolektor})
    assert geometries == {"bottle": Geometry(640, 640), "kolektorsdd": Geometry(640, 256)}


def test_median_aspect_of_an_even_count():
    assert median_aspect([(100, 100), (200, 100), (300, 100), (400, 100)]) == pytest.approx(2.5)


def test_nearest_geometry_by_log_aspect():
    stored = {"square": Geometry(256, 256), "tall": Geometry(640, 256), "wide": Geometry(256, 768)}
    assert nearest_geometry(0.45, stored)[0] == "tall"
    assert nearest_geometry(1.2, stored)[0] == "square"
    assert nearest_geometry(2.5, stored)[0] == "wide"


def test_aspect_mismatch_flags_stretches_over_ten_percent():
    assert not aspect_mismatch(1.05, Geometry(256, 256))
    assert aspect_mismatch(1.25, Geometry(256, 256))
    assert aspect_mismatch(1.0, Geometry(640, 256))


@pytest.mark.parametrize("text,message", [
    ("250", "multiples of 32"), ("0", "at least 32"), ("16", "at least 32"), ("32", "one cell"), ("1248x500", "multiples of 32"),
    ("2048x128", "aspect ratio beyond 8:1"), ("big", "N \\(square\\), HxW"), ("long:", "not understood"),
    ("256x", "not understood"),
])
def test_sizes_that_cannot_work_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_size_rule(text)


def test_long_rule_refuses_an_aspect_beyond_the_limit():
    with pytest.raises(ValueError, match="aspect ratio beyond"):
        parse_size_rule("long:640").geometry_for(1 / 12)
