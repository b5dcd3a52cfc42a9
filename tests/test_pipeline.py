"""End to end: `dvc repro` in a temporary git repo on an archive served from 127.0.0.1.

The session's reproduced repository (tests/reproduced.py) pays for the one full `dvc repro`. Tests only read it; a
test that runs `dvc` works in its own copy (git history, DVC cache with its run-cache, outputs), so each test passes
or fails alone and in any order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from stages.evaluate import evaluate
from stages.extract import extract
from stages.features import extract_features
from stages.split import list_images, split_images, write_manifests
from stages.train import train
from synthetic.datasets import make_archive
from synthetic.repos import md5_of, read_params, stages_restored, stages_run, write_params
from tests.helpers import SMALL_FEATURES, SMALL_TRAIN, dvc, fetch
from transfer.core.params import FeaturesParams, TrainParams
from transfer.features.cache import load_classes

STAGES = ["source", "download", "extract", "split", "features", "audit", "train", "evaluate", "finetune", "export"]
AUDIT_OUTPUTS = ["duplicates.csv", "label_issues.csv", "summary.json", "duplicates.png", "label_issues.png"]


def repro(repo: Path) -> str:
    result = dvc(repo, "repro")
    return f"{result.stdout}\n{result.stderr}"


@pytest.mark.e2e
def test_repro_runs_every_stage_and_writes_metrics(reproduced):
    path = reproduced.path
    assert stages_run(reproduced.log) == STAGES
    metrics = json.loads((path / "metrics" / "test.json").read_text())
    assert set(metrics) == {"accuracy", "loss", "top5_accuracy", "balanced_accuracy", "macro_f1", "n_test"}
    assert metrics["accuracy"] >= 0.6 and metrics["balanced_accuracy"] >= 0.6  # chance is 0.2
    data = json.loads((path / "metrics" / "data.json").read_text())
    assert data["excluded"] == ["BACKGROUND_Google"] and data["n_classes"] == 5
    assert {entry["path"].split("/")[-1] for entry in data["skipped_files"]} == {"image_corrupt.jpg", "notes.txt"}
    assert (path / "data" / "raw" / "caltech-101.zip").is_file()
    for output in ("models/head.keras", "models/classifier.keras", "metrics/confusion_matrix.png"):
        assert (path / output).is_file()
    assert (path / "metrics/top_losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The data audit ran beside train (tests/test_audit.py checks what it finds): every image, every output.
    audit = json.loads((path / "metrics/audit/summary.json").read_text())
    assert audit["images"] == sum(data["images_per_class"].values()) and audit["label_issues"]["checked_classes"] == 5
    assert sorted(p.name for p in (path / "metrics/audit").iterdir()) == sorted(AUDIT_OUTPUTS)


@pytest.mark.e2e
def test_stage_logs_carry_no_cuda_start_up_noise_without_a_gpu(reproduced):
    assert "on CPU (tensorflow)" in reproduced.log  # the features stage says which device it used
    for noise in ("cuInit", "cuda_", "oneDNN", "I0000", "E0000", "absl::InitializeLog"):
        assert noise not in reproduced.log, noise


@pytest.mark.e2e
def test_metrics_and_plots_are_declared(reproduced, tmp_path):
    path = reproduced.copy(tmp_path / "repo")
    shown = json.loads(dvc(path, "metrics", "show", "--json").stdout)
    (workspace,) = shown.values()
    assert workspace["data"]["metrics/test.json"]["data"] == json.loads((path / "metrics/test.json").read_text())
    assert "metrics/train/metrics.json" in workspace["data"]
    audit = json.loads((path / "metrics/audit/summary.json").read_text())
    shown = {key: value for key, value in audit.items() if value != {}}  # DVC leaves out an empty per_class
    assert workspace["data"]["metrics/audit/summary.json"]["data"] == shown
    # The delivered classifier's test metrics beside the head's: the head's own at finetune.epochs 0.
    finetuned = workspace["data"]["metrics/finetune/test.json"]["data"]
    assert finetuned == workspace["data"]["metrics/test.json"]["data"]

    plots = json.loads(dvc(path, "plots", "show", "--json").stdout)
    # DVC exits 0 and lists a plot it could not read under "errors", or with no data at all.
    assert "errors" not in plots, plots["errors"]
    data = plots["data"]
    titles = {"Loss per epoch", "Accuracy per epoch", "Test confusion matrix", "metrics/confusion_matrix.png"}
    titles |= {"Fine-tuning loss per epoch", "metrics/finetune/confusion_matrix.png", "metrics/top_losses.png"}
    titles |= {"metrics/finetune/top_losses.png"}
    titles |= {"metrics/audit/label_issues.png", "metrics/audit/duplicates.png"}
    assert set(data) == titles
    epochs = read_params(path)["train"]["epochs"]
    for title in ("Loss per epoch", "Accuracy per epoch"):
        (plot,) = data[title]
        assert len(plot["content"]["data"]["values"]) == 2 * epochs, title  # train and eval, one row per epoch
    (confusion,) = data["Test confusion matrix"]
    rows = confusion["content"]["data"]["values"]
    predictions = pd.read_csv(path / "metrics/predictions.csv", dtype=str)
    assert [(row["actual"], row["predicted"]) for row in rows] == list(
        zip(predictions["actual"], predictions["predicted"], strict=True)
    )
    assert len(rows) == json.loads((path / "metrics/test.json").read_text())["n_test"]
    (image,) = data["metrics/confusion_matrix.png"]
    assert Path(image["url"]).read_bytes() == (path / "metrics/confusion_matrix.png").read_bytes()


@pytest.mark.e2e
def test_switching_back_to_a_backbone_restores_its_features_from_the_cache(reproduced, tmp_path):
    path = reproduced.copy(tmp_path / "repo")
    params = read_params(path)
    resnet = md5_of(path / "data" / "features" / "train" / "features.npy")
    assert params["features"]["backbone"] == "resnet50"
    params["features"]["backbone"] = "mobilenetv3large"
    write_params(path, params)
    switched = dvc(path, "repro", "features")  # the head stages would rerun the same way: not needed here
    assert stages_run(switched.stdout) == ["features"]
    assert md5_of(path / "data" / "features" / "train" / "features.npy") != resnet

    params["features"]["backbone"] = "resnet50"
    write_params(path, params)
    back = repro(path)
    assert stages_run(back) == [] and stages_restored(back) == ["features"]
    assert md5_of(path / "data" / "features" / "train" / "features.npy") == resnet
    assert json.loads(dvc(path, "status", "--json").stdout) == {}


@pytest.mark.e2e
def test_own_data_three_classes_of_pngs_at_the_top_level(tmp_path, server):
    """Not Caltech-shaped: a zip of three class folders of PNGs, no BACKGROUND_Google, over HTTP."""
    archive = tmp_path / "flowers.zip"
    make_archive(archive, layout="user", n_classes=3, per_class=15, size=40, image_format="PNG", extras=False)
    url = server.add("/own/flowers.zip", archive.read_bytes())
    raw = fetch(url, tmp_path / "raw" / "flowers.zip", md5_of(archive), tmp_path / "partial")
    report = extract(raw, tmp_path / "images", tmp_path / "data.json", exclude=())
    assert report["images_per_class"] == {"accordion": 15, "airplanes": 15, "anchor": 15}
    write_manifests(split_images(list_images(tmp_path / "images"), 0.2, 0.2, 0), tmp_path / "split")
    extract_features(tmp_path / "images", tmp_path / "split", tmp_path / "features", FeaturesParams(**SMALL_FEATURES))
    assert load_classes(tmp_path / "features") == ["accordion", "airplanes", "anchor"]
    # 27 training images are 2 batches an epoch: SMALL_TRAIN's 8 epochs (16 steps) leave this head at 0.44 accuracy
    # (the logistic head gets 1.0 on the same features); 30 epochs, as in small_params(), learn these classes.
    config = TrainParams(**{**SMALL_TRAIN, "epochs": 30})
    train(tmp_path / "features", tmp_path / "head.keras", tmp_path / "live", config)
    paths = [tmp_path / name for name in ("features", "split", "images", "head.keras", "metrics")]
    metrics = evaluate(*paths)
    assert metrics["n_test"] == 9 and metrics["accuracy"] > 0.5  # chance is 1/3
