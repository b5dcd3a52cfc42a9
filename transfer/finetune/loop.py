"""The fine-tuning loop: epochs of augmented batches, the validation loss after each, early stopping that keeps
the best epoch, and a checkpoint after every finished epoch from which an interrupted run resumes.

A checkpoint holds every variable of the model (weights, BatchNorm statistics, the Dropout seed generators' state)
and of the optimizer (Adam's moments and step count), the best epoch's weights and the history, with a fingerprint
of what the run was given, in one file replaced in one step: a run killed while saving resumes from one epoch
whole, never from one epoch's weights with another's history. The epoch's order and augmentation come from (seed,
epoch) alone (data.py), so a resumed run continues exactly where the interrupted one stopped: on a CPU, the same
final bytes. A loss that is no longer a number (a learning rate far too high) ends the run naming that rate, before
that epoch is checkpointed or kept.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transfer.core import signals
from transfer.core.errors import StageError
from transfer.core.progress import progress
from transfer.features.compiled_backbone import padded
from transfer.finetune.data import training_batches


@dataclass
class History:
    start: dict = field(default_factory=dict)  # the warm start's validation loss and accuracy
    epochs: list[dict] = field(default_factory=list)  # per finished epoch: train and val ("eval") loss and accuracy
    best_epoch: int = 0  # 1 for the first epoch; 0: the warm start, which fine-tuning must beat on validation
    best_loss: float = float("inf")


def _values(variables) -> list[np.ndarray]:
    return [np.array(v.numpy() if hasattr(v, "numpy") else v) for v in variables]


def _assign(variables, values) -> None:
    if len(variables) != len(values):
        raise ValueError(f"checkpoint holds {len(values)} variables, the model {len(variables)}")
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


class Checkpoint:
    """Folder `path` holding state.npz: the variables, and under "state" the history and fingerprint as JSON; one
    file, replaced atomically (os.replace), so what is there is always one epoch's whole state."""

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint

    def save(self, model, history: History, best: list[np.ndarray]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        arrays = _values(model.variables) + _values(model.optimizer.variables) + best
        state: dict[str, Any] = {
            "fingerprint": self.fingerprint,
            "n": [len(model.variables), len(model.optimizer.variables)],
            "history": history.__dict__,
        }
        text = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
        tmp = self.path / ".state.npz.tmp"
        with open(tmp, "wb") as file:
            np.savez(file, *arrays, state=text)
        os.replace(tmp, self.path / "state.npz")

    def restore(self, model) -> tuple[History, list[np.ndarray]] | None:
        """The history and best weights of the last finished epoch, the model and optimizer set to that epoch's
        state; None when there is no checkpoint of this run (none, one made with other inputs, or an older form)."""
        try:
            with np.load(self.path / "state.npz") as stored:
                state = json.loads(stored["state"].tobytes().decode())
                arrays = [stored[f"arr_{i}"] for i in range(len(stored.files) - 1)]
        except (OSError, ValueError, KeyError):
            return None
        if state.get("fingerprint") != self.fingerprint:
            return None
        n_model, n_optimizer = state["n"]
        _assign(model.variables, arrays[:n_model])
        _assign(model.optimizer.variables, arrays[n_model : n_model + n_optimizer])
        return History(**state["history"]), arrays[n_model + n_optimizer :]


def _finite(loss: float, what: str, epoch: int, config) -> None:
    """A loss that is no longer a number means training diverged: fail, naming the rate, rather than keep going."""
    if not math.isfinite(loss):
        raise StageError(
            f"fine-tuning diverged: the {what} became {loss} in epoch {epoch + 1} with finetune.learning_rate "
            f"{config.learning_rate}; lower finetune.learning_rate in params.yaml (the default is 1e-05), then rerun"
        )


def _train_epoch(model, decoder, train, config, epoch: int, n_epochs: int) -> dict:
    paths, labels = train[:2]
    totals = np.zeros(2)
    with progress(desc=f"finetune epoch {epoch + 1}/{n_epochs}", unit="img", total=len(paths)) as bar:
        for images, batch_labels in training_batches(decoder, paths, labels, config.seed, epoch):
            n, size = len(images), max(config.batch_size, len(images))
            # Padding rows weigh 0, and the loss is a mean over the weights (transfer/finetune/model.py): the step
            # learns from the real rows alone, as an unpadded one would.
            weights = padded(np.ones(n, np.float32), size)
            with signals.deferred():  # a signal inside the backend's C++ code takes effect when the step returns
                result = model.train_on_batch(
                    padded(images, size), padded(batch_labels, size), sample_weight=weights, return_dict=True
                )
            _finite(float(result["loss"]), "training loss", epoch, config)
            totals += n * np.array([float(result["loss"]), float(result["accuracy"])])
            bar.update(n)
            bar.set_postfix(loss=f"{totals[0] / bar.n:.4f}")
    return {"loss": totals[0] / len(paths), "accuracy": totals[1] / len(paths)}


def predict(model, decoder, paths: list[str]) -> np.ndarray:
    """float64 probabilities of the images as the features stage sees them (no augmentation), rows summing to 1."""
    rows = []
    for images in decoder.batches(paths):
        with signals.deferred():
            scores = model.predict_on_batch(padded(images, max(decoder.batch_size, len(images))))
        rows.append(np.asarray(scores, dtype=np.float64)[: len(images)])
    probabilities = np.concatenate(rows) if rows else np.zeros((0, model.output_shape[-1]))
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def _scores(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-15, 1)
    return {"loss": float(-np.mean(np.log(picked))), "accuracy": float(np.mean(probabilities.argmax(1) == labels))}


def fit(model, decoder, data: dict, config, checkpoint: Checkpoint) -> History:
    """Train for config.epochs (fewer when the validation loss stops falling for config.patience epochs) and leave
    the model with the weights of its best epoch; resume from `checkpoint` when it holds this run."""
    restored = checkpoint.restore(model)
    history, best = restored if restored is not None else (History(), _values(model.weights))
    if restored is not None:
        print(f"finetune: resuming after epoch {len(history.epochs)} (checkpoint {checkpoint.path})")
    elif config.epochs:
        history.start = _scores(data["val"][1], predict(model, decoder, data["val"][0]))
        history.best_loss = history.start["loss"]
    for epoch in range(len(history.epochs), config.epochs):
        if len(history.epochs) - history.best_epoch >= config.patience:
            break
        train_scores = _train_epoch(model, decoder, data["train"], config, epoch, config.epochs)
        val_scores = _scores(data["val"][1], predict(model, decoder, data["val"][0]))
        _finite(val_scores["loss"], "validation loss", epoch, config)
        history.epochs.append({"train": train_scores, "eval": val_scores})
        if val_scores["loss"] < history.best_loss:
            history.best_epoch, history.best_loss = epoch + 1, val_scores["loss"]
            best = _values(model.weights)
        checkpoint.save(model, history, best)
        print(
            f"finetune: epoch {epoch + 1}: loss {train_scores['loss']:.4f}, val loss {val_scores['loss']:.4f}, "
            f"val accuracy {val_scores['accuracy']:.4f}"
        )
    _assign(model.weights, best)
    return history
