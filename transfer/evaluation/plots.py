"""The confusion matrix as a picture for people, with class names drawn in any installed font that has them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transfer.core.files import atomic_output


def fonts_for(names: list[str]) -> tuple[list[str], set[str]]:
    """Font families that together draw the names (matplotlib's default first, then any installed font covering
    characters it lacks, e.g. Noto Sans CJK), and the names that no installed font can draw."""
    from matplotlib import font_manager, ft2font, rcParams

    def charmap(path: str) -> set[int]:
        try:
            return set(ft2font.FT2Font(path).get_charmap())
        except (OSError, RuntimeError):
            return set()

    default = font_manager.FontProperties(family=rcParams["font.family"])
    families, covered = [default.get_family()[0]], charmap(font_manager.findfont(default))
    missing = {ord(c) for name in names for c in name} - covered
    # Matplotlib's "Last Resort" font maps every character to a box naming its Unicode block: not legible.
    fonts = [entry for entry in font_manager.fontManager.ttflist if not entry.name.startswith("Last Resort")]
    for entry in sorted(fonts, key=lambda entry: entry.name) if missing else []:
        found = missing & charmap(entry.fname)
        if found and entry.name not in families:
            families.append(entry.name)
            covered |= found
            missing -= found
    return families, {name for name in names if any(ord(c) not in covered for c in name)}


def confusion_figure(labels: np.ndarray, predicted: np.ndarray, classes: list[str]):
    """Row-normalised confusion matrix: the diagonal is each class's recall. A class name that no installed
    font can draw is shown as its index (#3: the row of per_class.csv) instead of as empty boxes."""
    # The object-oriented API on the Agg canvas, not pyplot: evaluate runs in every experiment, and pyplot's import
    # (its backend machinery) costs more than drawing the figure.
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    families, undrawable = fonts_for(classes)
    shown = [f"#{i}" if name in undrawable else name for i, name in enumerate(classes)]
    from sklearn.metrics import confusion_matrix  # evaluate has imported scikit-learn for its scores already

    # Row-normalised (each diagonal cell is that class's recall); a class absent from the test split is a row of 0.
    matrix = confusion_matrix(labels, predicted, labels=range(len(classes)), normalize="true")
    side = max(6.0, 0.16 * len(classes) + 3)
    with matplotlib.rc_context({"font.family": families}):
        fig = Figure(figsize=(side, side))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
        ticks = np.arange(len(classes))
        font = max(4, min(10, 400 // len(classes)))
        ax.set_xticks(ticks, shown, rotation=90, fontsize=font)
        ax.set_yticks(ticks, shown, fontsize=font)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        title = f"Test confusion matrix (row-normalised), accuracy {np.mean(labels == predicted):.3f}"
        if undrawable:
            title += "\n#N: a class name no installed font draws; row N of per_class.csv"
        ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.04)
        fig.tight_layout()
    return fig, families


def plot_confusion(labels: np.ndarray, predicted: np.ndarray, classes: list[str], out: Path) -> None:
    import matplotlib

    fig, families = confusion_figure(labels, predicted, classes)
    with atomic_output(out, suffix=".png") as tmp, matplotlib.rc_context({"font.family": families}):
        fig.savefig(tmp, dpi=100, metadata={"Software": None})
