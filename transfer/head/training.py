"""The classifier heads trained on the cached features: the tutorial's dense head, and logistic regression."""

from __future__ import annotations

import numpy as np

from transfer.core import params
from transfer.core.errors import StageError


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
    # What evaluate and export use is the trained function; the optimizer's state (Adam's two moments, twice the
    # weights' size) would triple head.keras, stored again by every experiment. Save an uncompiled copy instead.
    head = dense_head(train[0].shape[1], n_classes, config.hidden_units, config.dropout)
    head.set_weights(model.get_weights())
    return head


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
