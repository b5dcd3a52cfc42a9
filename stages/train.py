"""Stage 5: train the classifier head on the cached features, in seconds.

train.head `dense` is the tutorial's head (BatchNorm, Dropout, Dense+ReLU, BatchNorm, Dropout,
softmax), trained with Adam. `logistic` is L2-regularised logistic regression on standardised
features (scikit-learn), the strong baseline of the transfer-learning literature, saved as the same
kind of Keras model so evaluate and export treat both alike. Per-epoch loss and accuracy go to DVCLive.
"""

from __future__ import annotations

import gc
from pathlib import Path

from transfer.artifacts.keras_files import save_model
from transfer.core import cli, devices, params
from transfer.core.files import atomic_output
from transfer.features.cache import load_classes, load_part
from transfer.head import memory
from transfer.head.training import fit_dense, fit_logistic


def train(features_dir: Path, model_path: Path, live_dir: Path, config: params.TrainParams) -> None:
    devices.use("tensorflow")
    from dvclive import Live

    classes = load_classes(features_dir)
    train_part, val_part = load_part(features_dir, "train"), load_part(features_dir, "val")
    memory.check_fits(config, train_part[0].shape[1], len(classes), len(train_part[1]))  # before Keras builds it
    devices.seed_everything(config.seed)
    fit = fit_dense if config.head == "dense" else fit_logistic
    # The DVCLive files are tracked in git: log into a temporary sibling and move it into place only once training
    # has finished, so an interrupted run leaves no partial metrics or plots to commit.
    with atomic_output(Path(live_dir)) as live_tmp:
        with Live(str(live_tmp), dvcyaml=False, save_dvc_exp=False, report=None) as live:
            model = fit(train_part, val_part, len(classes), config, live)
        with atomic_output(Path(model_path), suffix=".keras") as tmp:
            save_model(model, tmp)
    print(f"train: {config.head} head on {len(train_part[1])} images, {len(classes)} classes -> {model_path}")


def main(features_dir: Path, model_path: Path, live_dir: Path) -> None:
    train(features_dir, model_path, live_dir, params.load().train)
    gc.freeze()  # the outputs are written: spare the exit the collector's walk over what training left (devices.py)


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        features_dir="cached features (data/features)",
        model_path="where the trained head is saved (models/head.keras)",
        live_dir="DVCLive folder for per-epoch metrics (metrics/train)",
    )
