"""transfer/artifacts/keras_files.py: a model saved twice, by two processes at two times, gives the same .keras
bytes, and the file still loads with keras.models.load_model and predicts what the model predicted."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from synthetic.repos import ROOT, subprocess_env
from transfer.artifacts.keras_files import FIXED_TIME, canonicalize

# A trained head like the train stage's (BatchNorm, Dropout, Dense, Adam state), built and saved in a fresh process.
SAVE = """
import sys, numpy as np
from transfer.core import devices
keras = devices.use("tensorflow")
from transfer.artifacts.keras_files import save_model
devices.seed_everything(3)
model = keras.Sequential([keras.Input((6,)), keras.layers.BatchNormalization(), keras.layers.Dropout(0.5),
                          keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
model.fit(x, np.arange(32) % 3, epochs=2, batch_size=8, verbose=0)
save_model(model, sys.argv[1])
np.save(sys.argv[1] + ".npy", model.predict(x, verbose=0))
for plain in sys.argv[2:]:  # and with Keras's own save
    model.save(plain)
    np.save(plain + ".npy", model.predict(x, verbose=0))
"""


def save_in_a_process(path: Path, *plain: Path) -> None:
    """Train the model in a fresh process, save it to path (save_model) and to each of `plain` (model.save)."""
    env = {**subprocess_env(), "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "-1"}
    result = subprocess.run(
        [sys.executable, "-c", SAVE, str(path), *map(str, plain)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


@pytest.mark.e2e  # two Python processes import Keras
def test_two_processes_save_the_same_bytes_and_the_file_loads_and_predicts_the_same(tmp_path):
    a, b, plain = tmp_path / "a.keras", tmp_path / "b.keras", tmp_path / "plain.keras"
    save_in_a_process(a, plain)
    save_in_a_process(b)
    # Keras's own save differs in metadata.json (time) and config.json (object ids); the weights file does not.
    assert members(plain)["model.weights.h5"] == members(a)["model.weights.h5"] == members(b)["model.weights.h5"]
    assert members(plain)["config.json"] != members(a)["config.json"]
    assert a.read_bytes() == b.read_bytes()
    assert "date_saved" not in json.loads(members(a)["metadata.json"])

    from transfer.core import devices

    keras = devices.use("tensorflow")
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    for path in (a, plain):
        model = keras.models.load_model(path)
        np.testing.assert_array_equal(model.predict(x, verbose=0), np.load(f"{path}.npy"))
    # The optimizer state comes back too (train could resume from the file).
    assert len(keras.models.load_model(a).optimizer.variables) == len(
        keras.models.load_model(plain).optimizer.variables
    )


def test_canonicalize_fixes_times_order_and_renumbers_shared_ids_consistently(tmp_path):
    path = tmp_path / "m.keras"
    shared, other = 140529302848848, 139695814512208
    config = {"a": {"shared_object_id": shared}, "b": [{"shared_object_id": other}, {"shared_object_id": shared}]}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("model.weights.h5", (2026, 5, 4, 3, 2, 1)), b"\x89HDF weights")
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1", "date_saved": "2026-05-04@03:02:01"}))
    canonicalize(path)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["metadata.json", "config.json", "model.weights.h5"]
        assert {i.date_time for i in infos} == {FIXED_TIME}
        assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
        assert json.loads(zf.read("config.json")) == {
            "a": {"shared_object_id": 1},
            "b": [{"shared_object_id": 2}, {"shared_object_id": 1}],
        }
        assert json.loads(zf.read("metadata.json")) == {"keras_version": "3.15.1"}
        assert zf.read("model.weights.h5") == b"\x89HDF weights"
    once = path.read_bytes()
    canonicalize(path)
    assert path.read_bytes() == once
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # no temporary left behind
