"""Fine-tuning (finetune/dvc.yaml, on demand): the second phase, the top blocks of the backbone trained with the head.

Warm-starts from models/head.keras on the frozen backbone (finetune.epochs 0 gives the head's test predictions),
unfreezes the top finetune.unfreeze blocks with every BatchNorm frozen (transfer/finetune/model.py), and trains with
Adam at finetune.learning_rate on images the decoder workers crop and flip with seeds (transfer/finetune/data.py),
stopping when the validation loss has not fallen for finetune.patience epochs and keeping the best epoch
(transfer/finetune/loop.py). Writes models/finetuned.keras, a classifier like the exported one (raw images in,
probabilities out, class names inside), and in metrics/finetune/ what evaluate writes for the head, plus the
per-epoch curves (DVCLive, train/).

Like the features stage: the memory is checked first, on a GPU it runs in mixed precision and on the CPU
deterministically; a checkpoint after each finished epoch (models/.finetuned.keras.tmp-resume/, removed at the end)
lets a run killed for any reason resume from there, to the same final bytes on a CPU.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
from pathlib import Path

from transfer.artifacts.classifier import build_classifier
from transfer.artifacts.keras_files import save_model
from transfer.core import cli, devices, params, signals
from transfer.core.errors import StageError
from transfer.core.files import atomic_output, remove
from transfer.evaluation.scores import summary, write_results
from transfer.features.cache import load_classes
from transfer.features.decode_pool import ImageDecoder
from transfer.finetune import loop, memory
from transfer.finetune import model as finetune_model
from transfer.finetune.data import manifests


def _fingerprint(sections: list, head_path: Path, data: dict, classes: list[str]) -> str:
    """What the run depends on: a checkpoint made with anything else is not resumed."""
    digest = hashlib.sha256(Path(head_path).read_bytes())
    digest.update(json.dumps([[section.model_dump() for section in sections], classes]).encode())
    for part in ("train", "val"):
        digest.update(json.dumps([data[part][0], data[part][1].tolist()]).encode())
    return digest.hexdigest()


def write_curves(live_dir: Path, history: loop.History) -> None:
    """The per-epoch train and validation loss and accuracy, as DVCLive writes them (metrics/finetune/train/)."""
    from dvclive import Live

    with atomic_output(Path(live_dir)) as tmp, Live(str(tmp), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for epoch in history.epochs:
            for split, scores in epoch.items():
                for name, value in scores.items():
                    live.log_metric(f"{split}/{name}", value)
            live.next_step()


def finetune(
    images_dir: Path,
    split_dir: Path,
    features_dir: Path,
    head_path: Path,
    model_path: Path,
    metrics_dir: Path,
    features: params.FeaturesParams,
    config: params.FinetuneParams,
) -> dict:
    if not Path(head_path).is_file():
        raise StageError(f"{head_path} not found; run `dvc repro train` first")
    classes = load_classes(features_dir)
    data = manifests(images_dir, split_dir, classes)
    keras = devices.use(features.backend)
    device = devices.prepare_device(features.backend)
    on_gpu, largest_part = device.startswith("GPU"), max(len(part[0]) for part in data.values())
    memory.check_fits(features, largest_part, on_gpu, config.batch_size, config.unfreeze)
    # A fresh Keras session: the names Keras numbers (input_layer_3) and so the file's bytes do not depend on what
    # the process built before (tests run the stage several times in one process).
    keras.backend.clear_session()
    devices.seed_everything(config.seed, features.backend)  # the Dropout layers' seeds, drawn as the head loads
    with signals.deferred():
        head = keras.models.load_model(head_path, compile=False)
        model, extractor, unfrozen = finetune_model.build(features, config, head)
    print(
        f"finetune: {features.backbone} blocks {', '.join(unfrozen) or '(none)'} and the head, "
        f"{len(data['train'][0])} training images, on {device}",
        file=sys.stderr,
    )
    scratch = Path(model_path).with_name(f".{Path(model_path).name}.tmp-resume")
    checkpoint = loop.Checkpoint(scratch, _fingerprint([features, config], head_path, data, classes))
    with ImageDecoder(features.image_size, min(config.batch_size, largest_part)) as dec:
        history = loop.fit(model, dec, data, config, checkpoint)
        files, labels, names = data["test"]
        results = write_results(metrics_dir, labels, loop.predict(model, dec, files), classes, names, images_dir)
    write_curves(Path(metrics_dir) / "train", history)
    classifier = build_classifier(head, features, classes, finetune_model.export_copy(extractor, features))
    with atomic_output(Path(model_path), suffix=".keras") as tmp:
        save_model(classifier, tmp)
    remove(scratch)
    print(summary("finetune", results) + f" (best epoch {history.best_epoch} of {len(history.epochs)})")
    return results


def main(
    images_dir: Path, split_dir: Path, features_dir: Path, head_path: Path, model_path: Path, metrics_dir: Path
) -> None:
    paths = (images_dir, split_dir, features_dir, head_path, model_path, metrics_dir)
    with signals.termination_cleans_up():
        finetune(*paths, params.load().features, params.load().finetune)
    gc.freeze()  # the outputs are written: spare the exit the collector's walk over the model (devices.py)


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        images_dir="class folders of images (data/images)",
        split_dir="train/val/test manifests (data/split)",
        features_dir="cached features, for the class list (data/features)",
        head_path="the trained head to start from (models/head.keras)",
        model_path="where the fine-tuned classifier is written (models/finetuned.keras)",
        metrics_dir="where test.json, per_class.csv, the plots and train/ go (metrics/finetune)",
    )
