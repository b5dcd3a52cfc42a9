"""How much of what is planted the data audit finds, from images: generated classes with near-duplicates (saved
again at a lower JPEG quality) and label errors (moved to another class folder) planted by synthetic/planted.py, put
through the split and features stages' own functions (the random-init backbone at 32 px, as the tests use: no
ImageNet weights here) and the audit with the params.yaml defaults. Several seeds and copy qualities.

    python -m benchmarks.audit_planted          # -> benchmarks/results/audit_planted.json
    python -m benchmarks.audit_planted --size 64 --qualities 50 --name audit_planted_64px
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "audit_planted"


def one(seed: int, quality: int, classes: int, per_class: int, size: int, planted: int) -> dict:
    from stages.audit import audit
    from stages.features import extract_features
    from stages.split import list_images, split_images, write_manifests
    from synthetic.datasets import make_image_folders
    from synthetic.planted import plant
    from transfer.core import params

    folder = WORK / f"seed{seed}_q{quality}"
    shutil.rmtree(folder, ignore_errors=True)
    images, split, features = folder / "images", folder / "split", folder / "features"
    make_image_folders(images, classes, per_class, size, seed, extras=False)
    faults = plant(images, planted, planted, quality, seed)
    write_manifests(split_images(list_images(images), 0.2, 0.2, seed), split)
    config = dict(backbone="resnet50", backend="tensorflow", weights=None, image_size=32, batch_size=32)
    extract_features(images, split, features, params.FeaturesParams(**config))
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["audit"]
    audit(features, split, images, folder / "audit", params.AuditParams(**defaults))
    pairs = pd.read_csv(folder / "audit" / "duplicates.csv")
    issues = pd.read_csv(folder / "audit" / "label_issues.csv")
    listed = {frozenset(pair) for pair in zip(pairs.path_a, pairs.path_b, strict=True)}
    truth = {frozenset(pair) for pair in faults["duplicates"]}
    errors = {path for path, _ in faults["label_errors"]}
    return {
        "seed": seed,
        "copy_quality": quality,
        "duplicates_found": len(listed & truth),
        "other_pairs_listed": len(listed - truth),
        "label_errors_found": len(set(issues.path) & errors),
        "other_images_listed": len(set(issues.path) - errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--qualities", type=int, nargs="+", default=[70, 50])
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--size", type=int, default=48, help="side of the generated images, pixels")
    parser.add_argument("--planted", type=int, default=6, help="near-duplicates, and as many label errors")
    parser.add_argument("--name", default="audit_planted", help="writes benchmarks/results/NAME.json")
    args = parser.parse_args()
    runs = []
    for quality in args.qualities:
        for seed in args.seeds:
            runs.append(one(seed, quality, args.classes, args.per_class, args.size, args.planted))
            print(runs[-1], flush=True)
    result = {
        "what": "the audit (params.yaml defaults) on generated images with planted faults; random-init resnet50, 32 px",
        "classes": args.classes,
        "images_per_class_before_planting": args.per_class,
        "image_size": args.size,
        "duplicates_planted": args.planted,
        "label_errors_planted": args.planted,
        "runs": runs,
        "totals": {
            f"copy_quality_{quality}": {
                key: sum(run[key] for run in runs if run["copy_quality"] == quality)
                for key in ("duplicates_found", "other_pairs_listed", "label_errors_found", "other_images_listed")
            }
            | {"planted_each": args.planted * len(args.seeds)}
            for quality in args.qualities
        },
    }
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"-> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
