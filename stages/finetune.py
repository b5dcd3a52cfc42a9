"""Stage 6: fine-tuning, the second phase: the top blocks of the backbone trained with the head, on augmented images.

finetune.epochs 0, the default, means no fine-tuning: the stage scores the head on the cached test features exactly as
evaluate does (NumPy, no Keras: about a second) and records in models/finetuned/ that nothing was trained, so export
delivers the head on the frozen backbone. With epochs > 0 it warm-starts from models/head.keras on the frozen
backbone, unfreezes the top finetune.unfreeze blocks with every BatchNorm frozen (transfer/finetune/model.py), and
trains with Adam at finetune.learning_rate on images the decoder workers crop and flip with seeds
(transfer/finetune/data.py), stopping when the validation loss has not fallen for finetune.patience epochs and keeping
the best epoch (transfer/finetune/loop.py). When an epoch beat the warm start on validation, models/finetuned/ holds
its weights (backbone and head), which export builds into the classifier; when none did, the head stays the model.
metrics/finetune/ holds the delivered model's test results, as evaluate writes them, and the per-epoch curves.

Like the features stage: the memory is checked first, on a GPU it runs in mixed precision and on the CPU
deterministically; a checkpoint after each finished epoch (models/.finetuned.tmp-resume/, removed at the end) lets a
run killed for any reason resume from there, to the same final bytes on a CPU.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
from pathlib import Path

from transfer.core import cli, params, signals
from transfer.core.errors import StageError
from transfer.core.files import remove
from transfer.evaluation.scores import score_head, summary, write_results
from transfer.features.cache import load_classes
from transfer.finetune import loop
from transfer.finetune.curves import write_curves
from transfer.finetune.data import manifests
from transfer.finetune.weights import NOTHING_TRAINED, write_record


def _fingerprint(sections: list, head_path: Path, data: dict, classes: list[str]) -> str:
    """What the run depends on: a checkpoint made with anything else is not resumed."""
    digest = hashlib.sha256(Path(head_path).read_bytes())
    digest.update(json.dumps([[section.model_dump() for section in sections], classes]).encode())
    for part in ("train", "val"):
        digest.update(json.dumps([data[part][0], data[part][1].tolist()]).encode())
    return digest.hexdigest()


def train(images_dir, split_dir, features_dir, head_path, out_dir, metrics_dir, features, config) -> tuple[dict, dict]:
    """Fine-tune, write the best epoch's weights into out_dir (none when the warm start stayed best) and its test
    results into metrics_dir: (test scores, what out_dir's summary records)."""
    from transfer.core import devices
    from transfer.features.decode_pool import ImageDecoder
    from transfer.finetune import memory
    from transfer.finetune import model as finetune_model

    classes = load_classes(features_dir)
    data = manifests(images_dir, split_dir, classes)
    keras = devices.use(features.backend)
    device = devices.prepare_device(features.backend)
    on_gpu, largest_part = device.startswith("GPU"), max(len(part[0]) for part in data.values())
    memory.check_fits(features, largest_part, on_gpu, config.batch_size, config.unfreeze)
    # A fresh Keras session: the names Keras numbers (input_layer_3) and so the weights file's layout do not depend
    # on what the process built before (tests run the stage several times in one process).
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
    scratch = Path(out_dir).with_name(f".{Path(out_dir).name}.tmp-resume")
    checkpoint = loop.Checkpoint(scratch, _fingerprint([features, config], head_path, data, classes))
    with ImageDecoder(features.image_size, min(config.batch_size, largest_part)) as dec:
        history = loop.fit(model, dec, data, config, checkpoint)
        if history.best_epoch:
            files, labels, names = data["test"]
            predicted = loop.predict(model, dec, files)
            results = write_results(metrics_dir, labels, predicted, classes, names, images_dir)
    if not history.best_epoch:  # no epoch beat the warm start: the head on the frozen backbone stays the model
        results = score_head(features_dir, split_dir, head_path, metrics_dir, images_dir)
    write_curves(Path(metrics_dir) / "train", history.epochs)
    record = {"epochs_trained": len(history.epochs), "best_epoch": history.best_epoch, "unfrozen_blocks": unfrozen}
    tuned = (extractor.get_weights(), head.get_weights()) if history.best_epoch else None
    write_record(out_dir, record, tuned)
    remove(scratch)
    return results, record


def finetune(images_dir, split_dir, features_dir, head_path, out_dir, metrics_dir, features, config) -> dict:
    if not Path(head_path).is_file():
        raise StageError(f"{head_path} not found; run `dvc repro train` first")
    if config.epochs:
        results, record = train(images_dir, split_dir, features_dir, head_path, out_dir, metrics_dir, features, config)
        kept = f"best epoch {record['best_epoch']} of {record['epochs_trained']}"
    else:  # no fine-tuning: the head's scores, exactly as evaluate writes them, and a record saying so
        results = score_head(features_dir, split_dir, head_path, metrics_dir, images_dir)
        write_curves(Path(metrics_dir) / "train", [])
        write_record(out_dir, NOTHING_TRAINED)
        kept = "finetune.epochs is 0: the head on the frozen backbone"
    print(summary("finetune", results) + f" ({kept})")
    return results


def main(
    images_dir: Path, split_dir: Path, features_dir: Path, head_path: Path, out_dir: Path, metrics_dir: Path
) -> None:
    paths = (images_dir, split_dir, features_dir, head_path, out_dir, metrics_dir)
    with signals.termination_cleans_up():
        finetune(*paths, params.load().features, params.load().finetune)
    gc.freeze()  # the outputs are written: spare the exit the collector's walk over the model (devices.py)


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        images_dir="class folders of images (data/images)",
        split_dir="train/val/test manifests (data/split)",
        features_dir="cached features: the class list, and the test features at epochs 0 (data/features)",
        head_path="the trained head to start from (models/head.keras)",
        out_dir="where the fine-tuned weights and their summary go (models/finetuned)",
        metrics_dir="where test.json, per_class.csv, the plots and train/ go (metrics/finetune)",
    )
