"""Class names in the confusion-matrix plot: drawn with any installed font that has their characters; shown as
their index, never as empty boxes, when no font does.

The host's own fonts are hidden (a machine with a CJK font would draw what these tests expect to be missing): the
font manager sees matplotlib's bundled fonts, plus the one a test generates."""

import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib import font_manager

from transfer.evaluation.plots import confusion_figure

CLASSES = ["ant", "日本", "café"]  # Japanese: not in DejaVu Sans, matplotlib's default font
LABELS, PREDICTED = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])


def tick_texts(figure) -> tuple[list[str], list[str]]:
    axes = figure.axes[0]
    return [t.get_text() for t in axes.get_xticklabels()], [t.get_text() for t in axes.get_yticklabels()]


def drawn(figure) -> list[warnings.WarningMessage]:
    """Render the figure; return matplotlib's warnings about glyphs missing from the fonts."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure.canvas.draw()
    return [w for w in caught if "missing from font" in str(w.message)]


@pytest.fixture(autouse=True)
def bundled_fonts_only(monkeypatch):
    bundled = Path(matplotlib.get_data_path()) / "fonts"
    fonts = [f for f in font_manager.fontManager.ttflist if Path(f.fname).is_relative_to(bundled)]
    assert any(f.name == "DejaVu Sans" for f in fonts)  # matplotlib's default, always shipped with it
    monkeypatch.setattr(font_manager.fontManager, "ttflist", fonts)
    font_manager.fontManager._findfont_cached.cache_clear()
    yield
    font_manager.fontManager._findfont_cached.cache_clear()


def test_a_name_no_font_can_draw_is_shown_as_its_index():
    figure, families = confusion_figure(LABELS, PREDICTED, CLASSES)
    assert tick_texts(figure) == (["ant", "#1", "café"], ["ant", "#1", "café"])
    assert "row N of per_class.csv" in figure.axes[0].get_title()
    assert drawn(figure) == []


def make_font(path, family: str, characters: str) -> None:
    """A TrueType font whose glyphs (plain squares) cover `characters`, as an installed CJK font would."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    names = [".notdef"] + [f"uni{ord(c):04X}" for c in characters]
    pen = TTGlyphPen(None)
    for x, y in ((100, 0), (100, 700), (900, 700), (900, 0)):
        (pen.moveTo if x == 100 and y == 0 else pen.lineTo)((x, y))
    pen.closePath()
    square = pen.glyph()
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({ord(c): f"uni{ord(c):04X}" for c in characters})
    builder.setupGlyf({name: square for name in names})
    builder.setupHorizontalMetrics({name: (1000, 100) for name in names})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": family, "styleName": "Regular"})
    builder.setupOS2()
    builder.setupPost()
    builder.save(str(path))


@pytest.fixture
def cjk_font(tmp_path):
    path = tmp_path / "TestCJK-Regular.ttf"
    make_font(path, "Test CJK", "日本")
    font_manager.fontManager.addfont(str(path))  # into the bundled-only list, restored after the test
    font_manager.fontManager._findfont_cached.cache_clear()
    return "Test CJK"


def test_an_installed_font_with_the_characters_draws_the_name(cjk_font):
    figure, families = confusion_figure(LABELS, PREDICTED, CLASSES)
    assert families[1:] == [cjk_font]  # the default font first, then the one that has the Japanese characters
    assert tick_texts(figure) == (CLASSES, CLASSES)
    assert "per_class.csv" not in figure.axes[0].get_title()
    import matplotlib.pyplot as plt

    with plt.rc_context({"font.family": families}):
        assert drawn(figure) == []
