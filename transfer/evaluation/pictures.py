"""Pictures of the images to look at, each with a caption: the test images the classifier got most wrong (evaluate,
finetune), and the grid that the data audit draws its likely label errors and near-duplicates with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transfer.core.files import atomic_output
from transfer.core.images import ImageError, load_image
from transfer.evaluation.plots import fonts_for

THUMBNAIL = 160  # pixels, the longest side of each image shown (readable, and a small PNG for git)
TOP_LOSSES = 16  # test images in metrics/top_losses.png, as in fastai's plot_top_losses(16)


def _thumbnail(path: Path) -> tuple[np.ndarray | None, str]:
    """The image scaled to fit THUMBNAIL, or None and why it cannot be shown (a picture never fails the stage)."""
    from PIL import Image

    try:
        image = Image.fromarray(load_image(path))
    except ImageError as error:
        return None, str(error)
    image.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
    return np.asarray(image), ""


def image_grid(cells: list[tuple[Path, str]], title: str, out: Path, columns: int = 4, empty: str = "") -> None:
    """A PNG of the images `cells` names, `columns` a row, each above its caption; when there are none, a small
    picture that says `empty` (DVC plots and the report expect the file)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    families, _ = fonts_for([caption for _, caption in cells] + [title])
    rows = max(1, -(-len(cells) // columns))
    lines = max((caption.count("\n") + 1 for _, caption in cells), default=1)
    with matplotlib.rc_context({"font.family": families}):
        # The object-oriented API on the Agg canvas, not pyplot (as transfer/evaluation/plots.py, for its import time).
        fig = Figure(figsize=(2.4 * columns, (2.3 + 0.17 * lines) * rows + 0.6) if cells else (6, 1.5))
        FigureCanvasAgg(fig)
        fig.suptitle(title, fontsize=10)
        if not cells:
            fig.text(0.5, 0.4, empty, ha="center", va="center", fontsize=10)
        for index, (path, caption) in enumerate(cells):
            ax = fig.add_subplot(rows, columns, index + 1)
            pixels, why = _thumbnail(path)
            if pixels is None:
                ax.text(0.5, 0.5, f"cannot show:\n{why}", ha="center", va="center", fontsize=7, wrap=True)
            else:
                ax.imshow(pixels)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(caption, fontsize=7)
        fig.tight_layout()
        with atomic_output(Path(out), suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100, metadata={"Software": None})


def shorten(path: str, width: int = 32) -> str:
    """A file's path for a caption: its end, where the class folder and file name are, within `width` characters."""
    return path if len(path) <= width else "…" + path[-(width - 1) :]


def top_losses(labels: np.ndarray, probabilities: np.ndarray, count: int = TOP_LOSSES) -> np.ndarray:
    """Indices of the `count` images with the highest loss (-log of the true class's probability), highest first;
    ties by index, so the same probabilities always give the same picture."""
    true_probability = probabilities[np.arange(len(labels)), labels]
    loss = -np.log(np.clip(true_probability, 1e-15, 1.0))
    return np.lexsort((np.arange(len(labels)), -loss))[:count]


def plot_top_losses(
    labels: np.ndarray, probabilities: np.ndarray, classes: list[str], paths, images_dir: Path, out: Path
) -> None:
    """metrics/top_losses.png: the test images with the highest loss, each captioned as fastai's plot_top_losses
    does: predicted class, actual class, loss and the predicted class's probability."""
    predicted = probabilities.argmax(axis=1)
    cells = []
    for i in top_losses(labels, probabilities):
        loss = -np.log(max(float(probabilities[i, labels[i]]), 1e-15))
        scores = f"loss {loss:.2f}, p {probabilities[i, predicted[i]]:.2f}"
        caption = f"{classes[predicted[i]]} / {classes[labels[i]]}\n{scores}\n{shorten(paths[i])}"
        cells.append((Path(images_dir) / paths[i], caption))
    title = "Test images with the highest loss: predicted / actual, loss, probability of the prediction"
    image_grid(cells, title, out, empty="no test images")
