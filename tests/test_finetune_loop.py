"""transfer/finetune/loop.py without Keras: a diverged run fails naming the value that caused it, and the checkpoint
is written as one unit. A stand-in model (NumPy variables) and decoder keep these tests to milliseconds."""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import pytest

from transfer.core.errors import StageError
from transfer.core.params import FinetuneParams
from transfer.finetune import loop


class Variable:
    def __init__(self, value: float):
        self.value = np.array(value, dtype=np.float32)

    def numpy(self):
        return self.value

    def assign(self, value) -> None:
        self.value = np.array(value, dtype=np.float32)


class Optimizer:
    def __init__(self):
        self.variables = [Variable(0.0)]


class Model:
    """Two classes; `step` adds one to every variable per training batch; `losses` are the training losses."""

    output_shape = (None, 2)

    def __init__(self, losses=(0.5,), probabilities=(0.7, 0.3)):
        self.variables = [Variable(0.0), Variable(0.0)]
        self.weights = self.variables
        self.optimizer = Optimizer()
        self.losses, self.probabilities, self.steps = list(losses), probabilities, 0
        self.batches: list[tuple[int, list[float]]] = []  # (rows, sample weights) of each training step

    def train_on_batch(self, images, labels, sample_weight=None, return_dict=True):
        self.batches.append((len(images), list(sample_weight)))
        for variable in self.variables:
            variable.assign(variable.value + 1)
        loss = self.losses[min(self.steps, len(self.losses) - 1)]
        self.steps += 1
        return {"loss": loss, "accuracy": 0.5}

    def predict_on_batch(self, images):
        return np.tile(np.asarray(self.probabilities, np.float32), (len(images), 1))


class Decoder:
    batch_size = 2

    def batches(self, paths, seeds=None):
        for start in range(0, len(paths), self.batch_size):
            yield np.zeros((len(paths[start : start + self.batch_size]), 2, 2, 3), np.uint8)


DATA = {part: ([f"{part}{i}.png" for i in range(4)], np.array([0, 1, 0, 1])) for part in ("train", "val")}


def config(**overrides) -> FinetuneParams:
    values = dict(epochs=2, learning_rate=1e-5, unfreeze=1, batch_size=2, patience=3, seed=1)
    return FinetuneParams(**{**values, **overrides})


@pytest.mark.parametrize(
    ("losses", "probabilities", "where"),
    [((0.5, math.nan), (0.7, 0.3), "training loss"), ((0.5,), (math.nan, math.nan), "validation loss")],
    ids=["training", "validation"],
)
def test_a_diverged_run_fails_naming_the_learning_rate(tmp_path, losses, probabilities, where):
    """finetune.learning_rate 1e9 trained to NaN and the stage exited 0, keeping the head's weights without a word."""
    checkpoint = loop.Checkpoint(tmp_path / "resume", "run")
    with pytest.raises(StageError) as caught:
        loop.fit(Model(losses, probabilities), Decoder(), DATA, config(learning_rate=1e9), checkpoint)
    message = str(caught.value)
    assert f"the {where} became nan in epoch 1" in message, message
    assert "finetune.learning_rate 1000000000.0" in message and "lower finetune.learning_rate" in message
    assert not (tmp_path / "resume").exists() or not any((tmp_path / "resume").iterdir())  # no diverged checkpoint


def test_the_checkpoint_is_one_unit_so_a_kill_while_saving_resumes_one_epoch_whole(tmp_path, monkeypatch):
    """It was two files replaced one after the other: a kill between them resumed an epoch's weights with the
    previous epoch's history, and ended in other bytes than an uninterrupted run."""
    checkpoint = loop.Checkpoint(tmp_path / "resume", "run")
    model = Model()
    history = loop.History(epochs=[{"train": {"loss": 1.0}}])
    for variable in model.variables:
        variable.assign(1.0)
    checkpoint.save(model, history, loop._values(model.weights))  # epoch 1, whole

    replaced = []

    def killed_after_the_first_replace(source, target):
        if replaced:
            raise KeyboardInterrupt  # the kill, between two replaces
        replaced.append(target)
        real_replace(source, target)

    real_replace = os.replace
    monkeypatch.setattr(os, "replace", killed_after_the_first_replace)
    for variable in model.variables:
        variable.assign(2.0)
    history.epochs.append({"train": {"loss": 0.5}})
    with contextlib.suppress(KeyboardInterrupt):
        checkpoint.save(model, history, loop._values(model.weights))  # epoch 2, killed while saving
    monkeypatch.setattr(os, "replace", real_replace)

    fresh = Model()
    restored, _ = checkpoint.restore(fresh)
    epochs = len(restored.epochs)
    assert [float(v.value) for v in fresh.variables] == [float(epochs)] * 2, "weights of one epoch, history of another"


def test_a_short_last_batch_is_padded_with_rows_that_weigh_nothing(tmp_path):
    """TensorFlow traced the training step again for the shorter last batch: seconds per run on a CPU. Every step now
    has batch_size rows; the padding's weight is 0, and the epoch's figures count the real rows alone."""
    data = {part: ([f"{part}{i}.png" for i in range(5)], np.array([0, 1, 0, 1, 0])) for part in ("train", "val")}
    model = Model(losses=(0.5, 0.5, 2.0))  # the last, half-padded step's loss stands out
    history = loop.fit(model, Decoder(), data, config(epochs=1), loop.Checkpoint(tmp_path / "resume", "run"))
    assert model.batches == [(2, [1.0, 1.0]), (2, [1.0, 1.0]), (2, [1.0, 0.0])]
    assert history.epochs[0]["train"]["loss"] == pytest.approx((0.5 * 2 + 0.5 * 2 + 2.0 * 1) / 5)
    assert loop.predict(model, Decoder(), data["val"][0]).shape == (5, 2)  # the padding's rows dropped
