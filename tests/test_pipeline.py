"""End to end: `dvc repro` in a temporary git repo on an archive served from 127.0.0.1."""

import json

import pytest
import yaml

from stages.download import fetch
from stages.evaluate import evaluate
from stages.extract import extract
from stages.features import extract_features, load_classes
from stages.params import FeaturesParams, TrainParams
from stages.split import list_images, split_images, write_manifests
from stages.train import train
from tests.conftest import SMALL_FEATURES, SMALL_TRAIN, dvc, make_repo, md5_of, pipeline_params, write_params
from tools.synthetic import make_archive

STAGES = ["download", "extract", "split", "features", "train", "evaluate", "export"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, server):
    """The official-layout archive over HTTP, reproduced once; tests below build on it in order."""
    folder = tmp_path_factory.mktemp("e2e")
    archive = folder / "caltech-101.zip"
    make_archive(archive, layout="official", n_classes=5, per_class=24, size=48, seed=1)
    url = server.add("/records/caltech-101.zip", archive.read_bytes())
    path = make_repo(folder / "repo", pipeline_params(url + "?download=1", md5_of(archive)))
    first = dvc(path, "repro")
    return path, first


def test_repro_runs_every_stage_and_writes_metrics(repo):
    path, first = repo
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first.stdout
    metrics = json.loads((path / "metrics" / "test.json").read_text())
    assert set(metrics) == {"accuracy", "loss", "top5_accuracy", "balanced_accuracy", "macro_f1", "n_test"}
    assert metrics["accuracy"] >= 0.6 and metrics["balanced_accuracy"] >= 0.6  # chance is 0.2
    data = json.loads((path / "metrics" / "data.json").read_text())
    assert data["excluded"] == ["BACKGROUND_Google"] and data["n_classes"] == 5
    assert {entry["path"].split("/")[-1] for entry in data["skipped_files"]} == {"image_corrupt.jpg", "notes.txt"}
    assert (path / "data" / "raw" / "caltech-101.zip").is_file()
    for output in ("models/head.keras", "models/classifier.keras", "metrics/confusion_matrix.png"):
        assert (path / output).is_file()


def test_second_repro_runs_nothing_and_status_is_clean(repo):
    path, _ = repo
    again = dvc(path, "repro")
    assert "Running stage" not in again.stdout
    status = dvc(path, "status", "--json")
    assert json.loads(status.stdout) == {}


def test_metrics_and_plots_are_declared(repo):
    path, _ = repo
    shown = json.loads(dvc(path, "metrics", "show", "--json").stdout)
    text = json.dumps(shown)
    assert "metrics/test.json" in text and "balanced_accuracy" in text
    plots = json.loads(dvc(path, "plots", "show", "--json").stdout)["data"]
    assert {"Loss per epoch", "Accuracy per epoch", "Test confusion matrix", "metrics/confusion_matrix.png"} <= set(
        plots
    )
    assert not dvc(path, "plots", "show", "--json").stderr.strip().startswith("ERROR")


def test_train_param_change_reruns_only_the_head_stages(repo):
    path, _ = repo
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["train"]["dropout"] = 0.3
    write_params(path, params)
    result = dvc(path, "repro")
    ran = [stage for stage in STAGES if f"Running stage '{stage}'" in result.stdout]
    assert ran == ["train", "evaluate", "export"]


def test_switching_back_to_a_backbone_restores_its_features_from_the_cache(repo):
    path, _ = repo
    params = yaml.safe_load((path / "params.yaml").read_text())
    resnet = md5_of(path / "data" / "features" / "train" / "features.npy")
    params["features"]["backbone"] = "mobilenetv3large"
    write_params(path, params)
    switched = dvc(path, "repro")
    assert "Running stage 'features'" in switched.stdout
    assert md5_of(path / "data" / "features" / "train" / "features.npy") != resnet

    params["features"]["backbone"] = "resnet50"
    write_params(path, params)
    back = dvc(path, "repro")
    assert "Running stage 'features'" not in back.stdout
    assert "Stage 'features' is cached - skipping run, checking out outputs" in back.stdout
    assert md5_of(path / "data" / "features" / "train" / "features.npy") == resnet


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
    train(tmp_path / "features", tmp_path / "head.keras", tmp_path / "live", TrainParams(**SMALL_TRAIN))
    metrics = evaluate(tmp_path / "features", tmp_path / "split", tmp_path / "head.keras", tmp_path / "metrics")
    assert metrics["n_test"] == 9 and metrics["accuracy"] > 0.5  # chance is 1/3
