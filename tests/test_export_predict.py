"""The exported classifier and the predict command."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.export import export
from stages.train import train
from synthetic.repos import ROOT, subprocess_env
from tests.helpers import SMALL_FEATURES, SMALL_TRAIN, assert_plain_keras_agrees, predict
from transfer.artifacts.predict import load_classifier
from transfer.core.errors import StageError
from transfer.core.images import load_image
from transfer.core.manifests import read_manifests
from transfer.core.params import FeaturesParams, TrainParams
from transfer.features.cache import load_classes, load_part
from transfer.finetune.weights import NOTHING_TRAINED, write_record


@pytest.fixture(scope="module")
def exported(feature_cache, tmp_path_factory):
    """A logistic head (scikit-learn: no TensorFlow training) on the session's features, exported with nothing
    fine-tuned."""
    models = tmp_path_factory.mktemp("models")
    config = TrainParams(**{**SMALL_TRAIN, "head": "logistic"})
    train(feature_cache["features"], models / "head.keras", models / "live", config)
    write_record(models / "finetuned", NOTHING_TRAINED)
    features = FeaturesParams(**SMALL_FEATURES)
    export(
        models / "head.keras", models / "finetuned", feature_cache["features"], models / "classifier.keras", features
    )
    return models


@pytest.fixture(scope="module", autouse=True)
def _each_model_file_built_once():
    """Most tests here load the one exported classifier: Keras builds a model from a file (and traces it on its first
    batch) once per file and worker, about two seconds each time otherwise. load_classifier's own checks still run
    on every call; a file that changes, or another file, is loaded again."""
    from transfer.core import devices

    keras = devices.use("tensorflow")
    built = {}
    load_model = keras.models.load_model

    def load_once(path, *args, **kwargs):
        stat = Path(path).stat()
        key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, args, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = load_model(path, *args, **kwargs)
        return built[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras.models, "load_model", load_once)
        yield


def run_predict(*args) -> subprocess.CompletedProcess:
    """The `predict` command's entry point as the console script calls it (arguments, exit status, stdout and
    stderr), in this process: no Keras start-up per call. test_predict_runs_from_any_directory_without_start_up_noise
    runs the installed command itself."""
    import contextlib
    import io

    from transfer.artifacts.predict import cli

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["predict", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_classifier_on_raw_images_agrees_with_the_cached_pipeline(exported, feature_cache):
    import keras

    head = keras.models.load_model(exported / "head.keras")
    manifest = read_manifests(feature_cache["split"])["test"]
    features, _ = load_part(feature_cache["features"], "test")
    model, classes, image_size = load_classifier(exported / "classifier.keras")
    assert classes == load_classes(feature_cache["features"]) and image_size == 32
    assert json.loads((exported / "classes.json").read_text()) == classes
    paths = [feature_cache["images"] / manifest["path"][row] for row in range(3)]
    results, errors = predict(model, classes, image_size, paths, top=len(classes))
    assert errors == {}
    for row, path in enumerate(paths):
        expected = np.asarray(head(features[row : row + 1]))[0]
        got = dict(results[str(path)])
        np.testing.assert_allclose([got[c] for c in classes], expected, atol=1e-4)
        # Raw pixels of any size work too: the model resizes itself (bilinear, without antialiasing).
        raw = load_image(path)
        assert raw.shape[0] != 32
        assert np.asarray(model(raw[np.newaxis])).shape == (1, len(classes))


def test_predict_prints_top_k_per_image(exported, feature_cache, capsys):
    images = sorted((feature_cache["images"]).rglob("*.jpg"))[:2]
    model, classes, image_size = load_classifier(exported / "classifier.keras")
    expected, _ = predict(model, classes, image_size, images, top=2)

    result = run_predict(*images, "--model", exported / "classifier.keras", "--top", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 * 3 and lines[0] == str(images[0]) and lines[3] == str(images[1])
    label, probability = lines[1].split("\t")
    assert (label, float(probability)) == (
        expected[str(images[0])][0][0],
        pytest.approx(expected[str(images[0])][0][1], abs=1e-4),
    )

    # --json through the command's own main(), in this process (the CLI wrapper is exercised above).
    from transfer.artifacts.predict import main

    main([images[0]], exported / "classifier.keras", top=5, as_json=True)
    parsed = json.loads(capsys.readouterr().out)["results"]
    assert list(parsed) == [str(images[0])]
    # The default top 5 (all 4 classes here), most likely first, with the probabilities the model gives.
    (expected_all,) = predict(model, classes, image_size, images[:1], top=len(classes))[0].values()
    assert len(classes) < 5 and len(expected_all) == len(classes)
    assert [entry["label"] for entry in parsed[str(images[0])]] == [label for label, _ in expected_all]
    np.testing.assert_allclose(
        [entry["probability"] for entry in parsed[str(images[0])]], [p for _, p in expected_all], atol=1e-4
    )


def test_predict_classifies_a_folder_and_names_each_bad_path(exported, feature_cache, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(feature_cache["images"] / sorted(p.name for p in feature_cache["images"].iterdir())[0], folder)
    good = sorted(folder.glob("*.jpg"))
    (folder / "notes.txt").write_text("skipped: not an image suffix")
    fake, missing = tmp_path / "fake.jpg", tmp_path / "missing.jpg"
    fake.write_text("not an image")

    result = run_predict(folder, fake, missing, "--model", exported / "classifier.keras", "--top", "1")
    assert result.returncode == 1
    printed = [line for line in result.stdout.splitlines() if not line.count("\t")]
    assert printed == [str(path) for path in good]  # every good image, in order, even though others failed
    assert result.stderr.splitlines() == [
        f"predict: {exported / 'classifier.keras'}: the head on the frozen backbone",  # which model, first
        f"error: {fake}: not an image file (unrecognised content)",
        f"error: {missing}: no such file",
    ]


def test_predict_on_every_image_format_matches_pillow_pixels(exported, tmp_path):
    from synthetic.image_corpus import make_corpus
    from tests.test_images import pillow_pixels

    samples = make_corpus(tmp_path / "corpus")
    model, classes, image_size = load_classifier(exported / "classifier.keras")
    paths = [tmp_path / "corpus" / sample.name for sample in samples]
    results, errors = predict(model, classes, image_size, paths, top=len(classes))
    assert errors == {} and len(results) == len(paths)
    expected = np.asarray(model.predict_on_batch(np.stack([pillow_pixels(p, image_size) for p in paths])))
    for path, row in zip(paths, expected, strict=True):
        got = dict(results[str(path)])
        np.testing.assert_allclose([got[c] for c in classes], row, atol=1e-5, err_msg=path.name)


@pytest.mark.e2e
def test_predict_runs_from_any_directory_without_start_up_noise(exported, feature_cache, tmp_path):
    # A copy of the project whose models/ holds the classifier: the default --model is found from anywhere.
    project = tmp_path / "project"
    shutil.copytree(ROOT / "transfer", project / "transfer", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(exported, project / "models")
    image = sorted(feature_cache["images"].rglob("*.jpg"))[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "transfer.artifacts.predict", str(image)],
        cwd=elsewhere,
        env={**subprocess_env(), "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(image) and len(result.stdout.splitlines()) == 1 + len(
        json.loads((exported / "classes.json").read_text())
    )
    # Only which model it used: no CUDA probing, oneDNN or absl lines on a machine without a GPU.
    model = project / "models" / "classifier.keras"
    assert result.stderr == f"predict: {model}: the head on the frozen backbone\n"


def test_predict_without_a_model_says_to_run_dvc_repro(tmp_path):
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    result = run_predict(image, "--model", tmp_path / "missing.keras")
    assert result.returncode == 1
    assert "missing.keras not found; run `dvc repro`" in result.stderr and "Traceback" not in result.stderr


# --- issue 20: predict checks what it loads, streams folders, and always answers --json with JSON


def copy_model(exported: Path, folder: Path, classes: list[str]) -> Path:
    folder.mkdir()
    shutil.copyfile(exported / "classifier.keras", folder / "classifier.keras")
    (folder / "classes.json").write_text(json.dumps(classes))
    return folder / "classifier.keras"


def test_predict_given_the_trained_head_names_the_exported_classifier(exported, feature_cache):
    image = sorted(feature_cache["images"].rglob("*.jpg"))[0]
    result = run_predict(image, "--model", exported / "head.keras")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {exported / 'head.keras'} is the trained head (cached features in, not images); pass "
        f"--model {exported / 'classifier.keras'}, the exported classifier (`dvc repro` writes it)"
    ]


@pytest.mark.parametrize("change", [-1, +1])
def test_classes_json_that_does_not_match_the_model_is_refused(exported, tmp_path, change):
    classes = json.loads((exported / "classes.json").read_text())
    names = classes[:-1] if change < 0 else [*classes, "unicorn"]
    model_path = copy_model(exported, tmp_path / "models", names)
    classes_path = model_path.with_name("classes.json")
    with pytest.raises(StageError) as caught:
        load_classifier(model_path, classes_path)
    assert str(caught.value) == (
        f"{classes_path} names {len(names)} classes, the model gives {len(classes)} class probabilities: it belongs "
        f"to another export of {model_path}; leave it out (the model holds its class names) or export both again "
        "with `dvc repro`"
    )


def test_the_class_names_travel_inside_the_model(exported, tmp_path):
    classes = json.loads((exported / "classes.json").read_text())
    # Another run's classes.json with as many names, beside the model: not read unless given, refused by name.
    swapped = [classes[1], classes[0], *classes[2:]]
    model_path = copy_model(exported, tmp_path / "models", swapped)
    assert load_classifier(model_path)[1] == classes
    with pytest.raises(StageError, match=f"names output 0 {classes[1]!r}, the model {classes[0]!r}"):
        load_classifier(model_path, model_path.with_name("classes.json"))
    assert load_classifier(model_path, exported / "classes.json")[1] == classes


def test_class_names_of_any_spelling_survive_the_layer_name():
    from transfer.artifacts.classifier import class_names, classes_layer_name

    names = ["Faces_easy", "delta, with a comma", "épsilon", "a.b~c%d", "中文", "x>y", "-_-", "100%"]

    class Layer:
        name = classes_layer_name(names)

    class Model:
        layers = [Layer]

    assert class_names(Model) == names
    assert set(Layer.name) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.>-")


@pytest.mark.e2e
def test_plain_keras_loads_the_classifier_without_the_project(exported, tmp_path):
    # On JAX: the fine-tuned classifier (the same layers), tests/test_finetune.py.
    images = np.random.default_rng(0).integers(0, 256, (3, 50, 40, 3)).astype(np.uint8)
    assert_plain_keras_agrees([exported / "classifier.keras"], images, "tensorflow", tmp_path)


def tiny_images(folder: Path, count: int, per_folder: int = 500) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"part{i // per_folder:02d}" / f"img{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (i % 256, 0, 0)).save(path)
        paths.append(path)
    return paths


class CountingModel:
    """Stands in for the classifier: uniform probabilities, and how many decoded images are alive per batch."""

    def __init__(self, n_classes: int, alive):
        self.n_classes, self.alive, self.seen = n_classes, alive, []

    def predict_on_batch(self, batch):
        self.seen.append((len(batch), self.alive()))
        return np.full((len(batch), self.n_classes), 1 / self.n_classes, np.float32)


def test_predict_decodes_a_folder_a_batch_at_a_time(tmp_path, monkeypatch):
    import gc
    import weakref

    import transfer.artifacts.predict as module

    count = 10 * module.BATCH_SIZE + 5  # ten full batches and a short one, in two sub-folders
    tiny_images(tmp_path / "photos", count, per_folder=200)
    decoded = []

    def load_and_count(path, size=None):
        pixels = load_image(path, size)
        decoded.append(weakref.ref(pixels))
        return pixels

    def alive():
        gc.collect()
        return sum(ref() is not None for ref in decoded)

    monkeypatch.setattr(module, "load_image", load_and_count)
    model = CountingModel(3, alive)
    results, errors = predict(model, ["a", "b", "c"], 32, [tmp_path / "photos"], top=1)
    assert errors == {} and len(results) == count
    assert sum(n for n, _ in model.seen) == count
    # Flat: at each prediction at most one batch of decoded images exists, not every image of the folder.
    assert max(n_alive for _, n_alive in model.seen) <= module.BATCH_SIZE


def test_predict_takes_the_files_extract_keeps_by_content(tmp_path):
    from tests.test_images import _truncated_jpeg
    from transfer.core.images import check_image

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "IMG_0001", "PNG")  # no suffix: extract keeps it
    Image.new("RGB", (8, 8), "blue").save(folder / "scan.JPG", "JPEG")
    Image.new("RGB", (16, 16), "green").save(folder / "icon.ico", "ICO")
    (folder / "broken.jpg").write_bytes(_truncated_jpeg())
    (folder / "notes.txt").write_text("a note, not an image")
    kept = {str(p) for p in folder.iterdir() if check_image(p) is None}
    assert kept == {str(folder / "IMG_0001"), str(folder / "scan.JPG")}

    results, errors = predict(CountingModel(2, lambda: 0), ["a", "b"], 32, [folder], top=1)
    assert set(results) == kept
    # Image files that cannot be used are named; other files in a folder (notes, .DS_Store) are not images.
    assert sorted(errors) == [str(folder / "broken.jpg"), str(folder / "icon.ico")]


def test_predict_reports_an_empty_folder_and_classifies_the_rest(exported, feature_cache, tmp_path, capsys):
    from transfer.artifacts.predict import main

    image = sorted(feature_cache["images"].rglob("*.jpg"))[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_:
        main([empty, image], exported / "classifier.keras", top=1, as_json=False)
    assert exit_.value.code == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == str(image)
    assert err.splitlines()[1:] == [f"error: {empty}: no image files in this folder"]  # after which model it used


def test_predict_json_is_one_document_in_every_case(exported, feature_cache, tmp_path, capsys):
    from transfer.artifacts.predict import main

    image = sorted(feature_cache["images"].rglob("*.jpg"))[0]
    fake, missing = tmp_path / "fake.jpg", tmp_path / "missing.jpg"
    fake.write_text("not an image")
    expected_errors = {str(fake): "not an image file (unrecognised content)", str(missing): "no such file"}

    used = {"path": str(exported / "classifier.keras"), "kind": "the head on the frozen backbone"}
    with pytest.raises(SystemExit):  # every path unreadable
        main([fake, missing], exported / "classifier.keras", top=1, as_json=True)
    assert json.loads(capsys.readouterr().out) == {"model": used, "results": {}, "errors": expected_errors}

    with pytest.raises(SystemExit):  # some readable
        main([image, fake, missing], exported / "classifier.keras", top=1, as_json=True)
    document = json.loads(capsys.readouterr().out)
    assert list(document["results"]) == [str(image)] and document["errors"] == expected_errors

    with pytest.raises(StageError) as caught:  # no model at all
        main([image], tmp_path / "missing.keras", top=1, as_json=True)
    assert json.loads(capsys.readouterr().out) == {"results": {}, "errors": {}, "error": str(caught.value)}


def test_a_link_cycle_in_a_folder_is_reported_and_the_rest_classified(tmp_path):
    """One link cycle abandoned the whole folder, and the images after it were silently not classified."""
    folder = tmp_path / "photos"
    images = tiny_images(folder, 4)
    (folder / "part00" / "loop_a.png").symlink_to(folder / "part00" / "loop_b.png")
    (folder / "part00" / "loop_b.png").symlink_to(folder / "part00" / "loop_a.png")
    results, errors = predict(CountingModel(2, lambda: 0), ["a", "b"], 32, [folder], top=1)
    assert sorted(results) == sorted(map(str, images))
    assert sorted(errors) == [str(folder / "part00" / name) for name in ("loop_a.png", "loop_b.png")]
    assert all("cannot read" in reason and "symbolic links" in reason for reason in errors.values())


def test_json_is_valid_utf8_whatever_the_file_names(tmp_path, monkeypatch, capsysbinary):
    import os

    import transfer.artifacts.predict as module

    folder = tmp_path / "photos"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    Image.new("RGB", (4, 4), "red").save(folder / name, "PNG")
    (folder / os.fsdecode(b"bad\xff.jpg")).write_bytes(b"not an image")
    monkeypatch.setattr(
        module, "load_classifier", lambda path, classes_path=None: (CountingModel(2, lambda: 0), ["a", "b"], 32)
    )
    with pytest.raises(SystemExit):
        module.main([folder], tmp_path / "model.keras", top=1, as_json=True)
    document = json.loads(capsysbinary.readouterr().out.decode("utf-8"))  # strict: raw bytes would fail here
    assert list(document["results"]) == [str(folder / "caf\\xe9.png")]  # each undecodable byte as \xNN
    assert list(document["errors"]) == [str(folder / "bad\\xff.jpg")]


def test_an_unreadable_folder_is_reported_once_and_the_rest_classified(tmp_path, monkeypatch):
    import os

    folder = tmp_path / "photos"
    images = tiny_images(folder, 4)
    (folder / "locked").mkdir()
    real = os.scandir

    def scandir(path):  # as without read permission (the tests run as root, which may read anything)
        if Path(path).name in ("locked", "top"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    results, errors = predict(CountingModel(2, lambda: 0), ["a", "b"], 32, [folder], top=1)
    assert sorted(results) == sorted(map(str, images))
    assert errors == {str(folder / "locked"): "cannot read this folder (Permission denied)"}
    (tmp_path / "top").mkdir()
    results, errors = predict(CountingModel(2, lambda: 0), ["a", "b"], 32, [tmp_path / "top"], top=1)
    assert results == {} and errors == {str(tmp_path / "top"): "cannot read this folder (Permission denied)"}


# --- issue 35: special files, files that are no model, a path named twice ---------------------------------------


def test_predict_never_opens_a_special_file_and_classifies_the_rest(tmp_path):
    """A FIFO given by name hung predict forever (open waits for a writer), and the images after it were never
    classified; a device such as /dev/zero never ends."""
    import os
    import threading

    first, last = tiny_images(tmp_path / "photos", 2)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    done: list = []
    worker = threading.Thread(
        target=lambda: done.append(predict(CountingModel(2, lambda: 0), ["a", "b"], 32, [first, fifo, last], 1)),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=20)
    if not done:
        with open(fifo, "wb"):  # let the hung open return, so the thread ends
            pass
    assert done, "predict hung on the FIFO"
    results, errors = done[0]
    assert set(results) == {str(first), str(last)}
    assert errors == {str(fifo): "not a regular file (a FIFO), so it is not read"}
    assert load_error("/dev/zero") == "not a regular file (a character device), so it is not read"


def load_error(path) -> str:
    from transfer.core.images import ImageError

    with pytest.raises(ImageError) as caught:
        load_image(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("content", "what"), [(b"not a model at all", "no Keras model file"), (b"", "an empty file (0 bytes)")]
)
def test_predict_model_that_is_no_model_file_is_named(tmp_path, content, what):
    """Keras answered `File not found` for a file that exists but is no model."""
    model = tmp_path / "classifier.keras"
    model.write_bytes(content)
    with pytest.raises(StageError) as caught:
        load_classifier(model)
    message = str(caught.value)
    assert f"{model} is not a Keras model file" in message and "not found" not in message and what in message


def test_predict_json_names_a_path_given_twice_once(tmp_path, monkeypatch, capsys):
    """The same image twice wrote a duplicate key into the JSON document."""
    import transfer.artifacts.predict as module

    (image,) = tiny_images(tmp_path / "photos", 1)
    monkeypatch.setattr(module, "load_classifier", lambda *args: (CountingModel(2, lambda: 0), ["a", "b"], 32))
    module.main([image, image, image.parent], tmp_path / "classifier.keras", top=1, as_json=True)

    def no_duplicates(pairs):
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate keys {keys}"
        return dict(pairs)

    document = json.loads(capsys.readouterr().out, object_pairs_hook=no_duplicates)
    assert list(document["results"]) == [str(image)]
