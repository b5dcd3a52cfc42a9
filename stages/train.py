"""Stage 5: train the classifier head on the cached features, in seconds.

train.head `dense` is the tutorial's head (BatchNorm, Dropout, Dense+ReLU, BatchNorm, Dropout,
softmax), trained with Adam. `logistic` is L2-regularised logistic regression on standardised
features (scikit-learn), the strong baseline of the transfer-learning literature, saved as the same
kind of Keras model so evaluate and export treat both alike. Per-epoch loss and accuracy go to DVCLive.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stages import backend, params
from stages.common import StageError, atomic_output, run
from stages.feature_cache import load_classes, load_part


def dense_head(n_features: int, n_classes: int, hidden_units: int, dropout: float):
    """The tutorial's head, minus its pooling layer: the cached features are already pooled."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((n_features,), name="features"),
            layers.BatchNormalization(),
            layers.Dropout(dropout),
            layers.Dense(hidden_units, activation="relu"),
            layers.BatchNormalization(),
            layers.Dropout(dropout),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="dense_head",
    )


def fit_dense(train, val, n_classes: int, config: params.TrainParams, live):
    import keras
    from dvclive.keras import DVCLiveCallback

    model = dense_head(train[0].shape[1], n_classes, config.hidden_units, config.dropout)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        *train,
        validation_data=val,
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=[DVCLiveCallback(live=live)],
        verbose=2,
    )
    return model


def fit_logistic(train, val, n_classes: int, config: params.TrainParams, live):
    """Fit with scikit-learn, then express the same function as Normalization -> Dense(softmax)."""
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train[0])
    classifier = LogisticRegression(C=config.logistic_c, max_iter=2000, random_state=config.seed)
    classifier.fit(scaler.transform(train[0]), train[1])
    if len(classifier.classes_) != n_classes:
        raise StageError("the train split lacks some classes; rerun `dvc repro split`")

    model = keras.Sequential(
        [
            keras.Input((train[0].shape[1],), name="features"),
            keras.layers.Normalization(mean=scaler.mean_, variance=scaler.var_),
            keras.layers.Dense(n_classes, activation="softmax"),
        ],
        name="logistic_head",
    )
    coef, intercept = classifier.coef_, classifier.intercept_
    if n_classes == 2:  # scikit-learn keeps one logit z for two classes: softmax([-z/2, z/2]) = sigmoid
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    model.layers[-1].set_weights([coef.T, intercept])
    labels = list(range(n_classes))
    for split, (x, y) in (("train", train), ("eval", val)):  # the names DVCLiveCallback uses
        probabilities = classifier.predict_proba(scaler.transform(x))
        live.log_metric(f"{split}/loss", log_loss(y, probabilities, labels=labels))
        live.log_metric(f"{split}/accuracy", accuracy_score(y, probabilities.argmax(axis=1)))
    live.next_step()
    return model


def train(features_dir: Path, model_path: Path, live_dir: Path, config: params.TrainParams) -> None:
    backend.use("tensorflow")
    from dvclive import Live

    classes = load_classes(features_dir)
    train_part, val_part = load_part(features_dir, "train"), load_part(features_dir, "val")
    backend.seed_everything(config.seed)
    fit = fit_dense if config.head == "dense" else fit_logistic
    # The DVCLive files are tracked in git: log into a temporary sibling and move it into place only once training
    # has finished, so an interrupted run leaves no partial metrics or plots to commit.
    with atomic_output(Path(live_dir)) as live_tmp:
        with Live(str(live_tmp), dvcyaml=False, save_dvc_exp=False, report=None) as live:
            model = fit(train_part, val_part, len(classes), config, live)
        with atomic_output(Path(model_path), suffix=".keras") as tmp:
            model.save(tmp)
    print(f"train: {config.head} head on {len(train_part[1])} images, {len(classes)} classes -> {model_path}")


def main(features_dir: Path, model_path: Path, live_dir: Path) -> None:
    train(features_dir, model_path, live_dir, params.load().train)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features_dir", type=Path, help="cached features (data/features)")
    parser.add_argument("model_path", type=Path, help="where the trained head is saved (models/head.keras)")
    parser.add_argument("live_dir", type=Path, help="DVCLive folder for per-epoch metrics (metrics/train)")
    args = parser.parse_args()
    run(lambda: main(args.features_dir, args.model_path, args.live_dir))
