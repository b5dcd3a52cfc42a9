"""End to end (issue 10): the official zip served the way repository servers serve it, and the archives users
make, through `dvc repro` in a scratch repository (up to extract: the stages after it are the session's reproduced
repository's, tests/reproduced.py, which reads the official layout too)."""

from __future__ import annotations

import json
import os
import unicodedata

import pandas as pd
import pytest

from synthetic.datasets import make_archive
from synthetic.repos import dvc_status, md5_of, small_params
from tests.helpers import dvc, make_repo

pytestmark = pytest.mark.e2e


def test_official_zip_behind_a_redirect_cut_halfway_runs_to_the_metrics(tmp_path, server):
    archive = tmp_path / "caltech-101.zip"
    # 160 px images make the zip about 200 KB, so the bytes before the cut outlast the 64 KiB read in flight.
    expected = make_archive(archive, layout="official", n_classes=3, per_class=12, size=160, seed=4)
    body = archive.read_bytes()
    assert len(body) > 3 * 2**16
    # ?download=1 answers 302 to a signed URL with its own query string; the first transfer stops halfway.
    server.add("/signed/e2e/caltech-101.zip", body, cut_after=len(body) // 2)
    url = server.add(
        "/records/mzrjq-6wc02/files/caltech-101.zip",
        b"",
        redirect="/signed/e2e/caltech-101.zip?X-Amz-Expires=3600&X-Amz-Signature=9a1b",
    )
    repo = make_repo(tmp_path / "repo", small_params(url + "?download=1", md5_of(archive)))

    result = dvc(repo, "repro", "extract")

    signed = server.routes["/signed/e2e/caltech-101.zip"].requests
    assert len(signed) == 2 and signed[0]["range"] is None and signed[1]["range"].startswith("bytes=")
    assert all(request["query"] == "X-Amz-Expires=3600&X-Amz-Signature=9a1b" for request in signed)
    assert "retrying" in result.stderr
    assert [p.name for p in (repo / "data" / "raw").iterdir()] == ["caltech-101.zip"]
    data = json.loads((repo / "metrics" / "data.json").read_text())
    assert data["images_per_class"] == expected["images_per_class"] and data["excluded"] == ["BACKGROUND_Google"]
    assert data["class_root"] == ("caltech-101.zip > caltech-101/101_ObjectCategories.tar.gz: 101_ObjectCategories/")
    assert dvc_status(repo, "extract") == {}


def test_the_metrics_score_exactly_the_test_split_in_its_order(reproduced):
    repo = reproduced.path
    metrics = json.loads((repo / "metrics" / "test.json").read_text())
    test_split = pd.read_csv(repo / "data" / "split" / "test.csv", dtype=str)
    predictions = pd.read_csv(repo / "metrics" / "predictions.csv", dtype=str)
    assert metrics["n_test"] == len(test_split) == len(predictions) > 0
    assert list(predictions["path"]) == list(test_split["path"])
    assert list(predictions["actual"]) == list(test_split["label"])
    assert metrics["accuracy"] == pytest.approx((predictions["actual"] == predictions["predicted"]).mean(), abs=1e-6)


def test_html_page_with_md5_null_does_not_stick(tmp_path, server):
    archive = tmp_path / "own.zip"
    make_archive(archive, layout="user", n_classes=2, per_class=4, size=32, extras=False)
    page = b"<!DOCTYPE html><html><body>Log in to download</body></html>\n" * 10
    url = server.add("/portal/own.zip", page)
    repo = make_repo(tmp_path / "repo", small_params(url, None))

    failed = dvc(repo, "repro", "extract", check=False)
    assert failed.returncode != 0
    assert "HTML page" in failed.stderr and "not a zip or tar archive" in failed.stderr
    assert list((repo / "data" / "raw").glob("*")) == []  # the page was not kept as the archive

    server.add("/portal/own.zip", archive.read_bytes())  # the server is fixed
    fixed = dvc(repo, "repro", "extract")  # no -f needed: the bad answer never became the stage's output
    assert "Running stage 'download'" in fixed.stdout
    assert json.loads((repo / "metrics" / "data.json").read_text())["n_classes"] == 2


@pytest.mark.parametrize("layout", ["latin1", "macos"])
def test_user_names_dvc_can_track(tmp_path, layout):
    """A tar with Latin-1 names broke DVC itself ("surrogates not allowed"); a macOS zip's NFD class name was not
    matched by data.exclude typed in NFC."""
    archive = tmp_path / ("names.tar" if layout == "latin1" else "names.zip")
    expected = make_archive(archive, layout=layout, n_classes=3, per_class=4, size=32, extras=False)
    repo = make_repo(tmp_path / "repo", small_params(str(archive), None, **{"data.exclude": ["café"]}))

    dvc(repo, "repro", "extract")

    data = json.loads((repo / "metrics" / "data.json").read_text(encoding="utf-8"))
    assert data["excluded"] == ["café"]
    assert set(data["images_per_class"]) == set(expected["images_per_class"]) - {"café"}
    for path in (repo / "data" / "images").rglob("*"):
        name = os.fsencode(path.name).decode("utf-8")
        assert name == unicodedata.normalize("NFC", name)
    status = dvc(repo, "status", "extract", "--json")
    assert json.loads(status.stdout) == {}
    assert "surrogates" not in status.stderr
