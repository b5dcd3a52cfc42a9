"""transfer/core/params.py: every key checked for type and range before any work; unknown keys get a suggestion."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from synthetic.repos import ROOT
from tests.helpers import run_stage
from tools import params_doc
from transfer.core import params, params_file
from transfer.core.errors import StageError

GOOD = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(key: str, value, raw: dict | None = None) -> dict:
    """A copy of the repository's params with `section.name` set to value."""
    raw = copy.deepcopy(GOOD if raw is None else raw)
    section, name = key.split(".")
    raw[section][name] = value
    return raw


def problem(raw) -> str:
    with pytest.raises(StageError) as caught:
        params.validate(raw)
    return str(caught.value)


def test_repository_params_are_valid_and_documented():
    params.load(ROOT / "params.yaml")
    # docs/params.md's table is generated from the declarations: a new or changed key shows up there.
    table = params_doc.markdown_table(GOOD)
    assert table in (ROOT / "docs" / "params.md").read_text(encoding="utf-8"), "run `python -m tools.params_doc`"
    documented = {line.split("`")[1] for line in table.splitlines()[2:]}
    assert documented == {f"{name}.{key}" for name, section in GOOD.items() for key in section}


def test_yaml_booleans_in_a_name_list_get_a_quoting_hint(tmp_path):
    # Read as DVC reads params.yaml (YAML 1.2): `[true, no]` is [True, 'no'], and the user typed folder names.
    path = tmp_path / "params.yaml"
    path.write_text("exclude: [true, no]\n")
    raw = params_file.read(path)
    assert raw["exclude"] == [True, "no"]
    message = problem(with_value("data.exclude", raw["exclude"]))
    assert "data.exclude" in message and "[True, 'no']" in message
    assert "quote such names" in message and "['true']" in message


def test_a_params_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(yaml.safe_dump(with_value("data.exclude", ["Café"]), allow_unicode=True).encode("latin-1"))
    with pytest.raises(
        StageError, match=r"params.yaml is not UTF-8 text \(byte 0xe9 at offset \d+\); save it as UTF-8"
    ):
        params.load(path)


def test_valid_edge_values_are_accepted(tmp_path):
    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"not really weights")
    raw = with_value("data.md5", "3138E1922A9193BFA496528EDBBC45D0")
    raw = with_value("data.exclude", None, raw)
    raw = with_value("features.weights", str(weights), raw)
    raw = with_value("features.image_size", 32, raw)
    raw = with_value("train.dropout", 0, raw)
    raw = with_value("split.seed", 2**32 - 1, raw)
    raw = with_value("finetune.epochs", 0, raw)
    raw = with_value("finetune.unfreeze", 0, raw)
    loaded = params.validate(raw)
    assert loaded.data.md5 == "3138e1922a9193bfa496528edbbc45d0"  # normalised to lower case
    assert loaded.data.exclude == ()
    assert loaded.features.weights == str(weights)
    assert loaded.train.dropout == 0.0
    assert loaded.finetune.epochs == loaded.finetune.unfreeze == 0
    assert params.validate(with_value("data.md5", None)).data.md5 is None
    assert params.validate(with_value("features.weights", None)).features.weights is None


@pytest.mark.parametrize(
    "key, value",
    [
        ("data.url", ""),
        ("data.url", 5),
        ("data.md5", "3138e1922a9193bfa496528edbbc45d"),  # 31 characters
        ("data.md5", "zz38e1922a9193bfa496528edbbc45d0"),  # not hex
        ("data.exclude", "BACKGROUND_Google"),  # a string, not a list
        ("data.exclude", [1]),
        ("split.test", 0),
        ("split.test", 1),
        ("split.test", 1.5),
        ("split.test", -0.2),
        ("split.test", "0.2"),
        ("split.test", True),
        ("split.test", math.nan),
        ("split.val", 0.0),
        ("split.seed", -1),
        ("split.seed", 1.5),
        ("split.seed", 2**32),  # NumPy rejects seeds >= 2**32
        ("features.backbone", "resnet51"),
        ("features.weights", "no/such/weights.h5"),
        ("features.weights", 5),
        ("features.image_size", 31),
        ("features.image_size", 224.0),
        ("features.batch_size", 0),
        ("train.head", "svm"),
        ("train.epochs", 0),
        ("train.batch_size", "32"),
        ("train.learning_rate", 0),
        ("train.learning_rate", -0.001),
        ("train.learning_rate", math.inf),
        ("train.hidden_units", 0),
        ("train.dropout", 1),
        ("train.dropout", -0.1),
        ("train.logistic_c", 0),
        ("train.seed", -3),
        ("train.seed", False),
        ("finetune.epochs", -1),
        ("finetune.learning_rate", 0),
        ("finetune.unfreeze", -1),
        ("finetune.unfreeze", 1.5),
        ("finetune.batch_size", 0),
        ("finetune.patience", 0),
        ("finetune.seed", 2**32),
    ],
)
def test_bad_value_is_rejected_naming_key_and_value(key, value):
    message = problem(with_value(key, value))
    assert f"{key} must be" in message or f"{key} is not an existing file" in message
    assert repr(value) in message


def test_every_problem_is_reported_at_once():
    raw = with_value("split.test", 2)
    raw = with_value("train.epochs", -1, raw)
    raw = with_value("features.backbone", "vgg", raw)
    message = problem(raw)
    assert "split.test" in message and "train.epochs" in message and "features.backbone" in message


def test_unknown_key_suggests_nearest_known_key():
    raw = copy.deepcopy(GOOD)
    raw["train"]["dropuot"] = raw["train"].pop("dropout")
    message = problem(raw)
    assert "unknown key train.dropuot; did you mean train.dropout?" in message
    assert "missing key train.dropout" in message


def test_unknown_section_suggests_nearest_section():
    raw = copy.deepcopy(GOOD)
    raw["trian"] = {}
    assert "unknown key trian; did you mean train?" in problem(raw)


def test_unknown_key_without_close_match_lists_known_keys():
    raw = with_value("split.zzz", 1)
    assert "unknown key split.zzz; known keys: split.test, split.val, split.seed" in problem(raw)


def test_non_string_top_level_key_is_reported_not_a_crash():
    raw = copy.deepcopy(GOOD)
    raw[1] = "x"
    assert "unknown key 1" in problem(raw)


def test_missing_key_and_missing_section():
    raw = copy.deepcopy(GOOD)
    del raw["split"]["seed"]
    del raw["features"]
    message = problem(raw)
    assert "missing key split.seed" in message
    assert "missing section features" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("data: [unclosed\n", "is not valid YAML"),
        ("data:\n\t- tab\n", "is not valid YAML"),
        ("", "expected a mapping"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_bad_yaml(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(StageError, match=expected):
        params.load(path)


def test_missing_params_file(tmp_path):
    with pytest.raises(StageError, match="not found"):
        params.load(tmp_path / "params.yaml")


# Every stage of dvc.yaml, with its command's arguments: a stage added there is checked without an edit here.
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(PIPELINE))
def test_stage_with_bad_params_exits_before_any_work(tmp_path, name):
    words = PIPELINE[name]["cmd"].split()
    assert words[:2] == ["python", "-m"] and words[2] == f"stages.{name}"
    raw = with_value("train.dropuot", 0.5, with_value("split.test", 1.5))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    for existing in ("data/raw/old.zip", "data/images/cat/a.jpg"):
        (tmp_path / existing).parent.mkdir(parents=True)
        (tmp_path / existing).write_bytes(b"old")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    result = run_stage(name, *words[3:], cwd=tmp_path)

    assert result.returncode == 1
    assert "split.test must be a number strictly between 0 and 1, got 1.5" in result.stderr
    assert "did you mean train.dropout?" in result.stderr
    assert "Traceback" not in result.stderr
    # No work done: nothing deleted (download clears data/raw first), nothing created.
    assert (tmp_path / "data/raw/old.zip").read_bytes() == (tmp_path / "data/images/cat/a.jpg").read_bytes() == b"old"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_bad_value_in_any_section_says_the_first_stage_to_run_reports_it(tmp_path):
    """In `dvc exp run --run-all`, a variant with a bad train.* value failed in stage `source` (the first stage an
    experiment runs: data/source is per machine), and DVC blamed `source`: the message says why that stage."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(with_value("train.epochs", -1)))
    with pytest.raises(StageError) as caught:
        params.load(path)
    message = str(caught.value)
    assert "train.epochs must be an integer >= 1" in message
    assert "every stage checks all of params.yaml before any work" in message and "whichever stage" in message


# ------------------------------------------------------------------------------------------- edited during a run


@pytest.fixture
def fresh_tracking(monkeypatch, tmp_path):
    """A params.yaml in tmp_path and clean load/read tracking (module state, one stage per process in real runs)."""
    monkeypatch.setattr(params, "_loaded", None)
    monkeypatch.setattr(params, "_read", set())
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    return path


def edit(path: Path, key: str, value) -> None:
    path.write_text(yaml.safe_dump(with_value(key, value)))


def test_a_read_key_edited_meanwhile_fails_naming_key_and_values(fresh_tracking):
    config = params.load(fresh_tracking).train
    assert config.epochs == GOOD["train"]["epochs"]
    edit(fresh_tracking, "train.epochs", 7)
    with pytest.raises(StageError) as caught:
        params.check_unchanged()
    message = str(caught.value)
    assert f"{fresh_tracking} changed while the stage ran" in message
    assert f"train.epochs {GOOD['train']['epochs']} -> 7" in message and "dvc repro" in message


def test_a_url_edited_meanwhile_is_named_without_its_secrets(fresh_tracking):
    assert params.load(fresh_tracking).data.url
    edit(fresh_tracking, "data.url", "https://alice:s3cret@example.org/a.zip?token=t0ken")
    with pytest.raises(StageError) as caught:
        params.check_unchanged()
    assert "data.url" in str(caught.value) and "https://***@example.org/a.zip?***" in str(caught.value)
    assert "s3cret" not in str(caught.value) and "t0ken" not in str(caught.value)


def test_keys_the_stage_did_not_read_may_change(fresh_tracking):
    config = params.load(fresh_tracking).data
    assert config.url and config.md5  # download reads these two, not data.exclude
    edit(fresh_tracking, "data.exclude", [])
    params.check_unchanged()
    edit(fresh_tracking, "features.batch_size", 3)
    params.check_unchanged()
    assert params._read == {"data.url", "data.md5"}
    edit(fresh_tracking, "data.md5", None)
    with pytest.raises(StageError, match=r"data\.md5"):
        params.check_unchanged()


def test_nothing_loaded_nothing_checked(fresh_tracking):
    params.check_unchanged()  # a stage that never called load() (predict)
    params.load(fresh_tracking)  # evaluate: validates, reads no key
    fresh_tracking.write_text("not: [valid")
    with pytest.raises(StageError, match="can no longer be read"):
        params.check_unchanged()


def test_run_exits_1_when_params_changed_while_the_stage_ran(fresh_tracking, capsys):
    from transfer.core.cli import run

    def stage():
        assert params.load(fresh_tracking).train.seed == 42
        edit(fresh_tracking, "train.seed", 1)

    with pytest.raises(SystemExit) as exited:
        run(stage)
    assert exited.value.code == 1
    assert "train.seed 42 -> 1" in capsys.readouterr().err

    run(lambda: params.load(fresh_tracking).train.seed)  # unchanged since this load: no exit


def test_a_second_run_in_the_same_process_does_not_check_the_first_ones_params(fresh_tracking, tmp_path, monkeypatch):
    """The tests (and a notebook) run a stage, then predict, in one process: predict reads no params, and must not
    fail on the params.yaml of the folder it now runs in, which is not the one the stage read."""
    from transfer.core.cli import run

    monkeypatch.chdir(fresh_tracking.parent)
    run(lambda: params.load().train.seed)  # a stage, from its repository: "params.yaml"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "params.yaml").write_text(yaml.safe_dump(with_value("train.seed", 1)))
    monkeypatch.chdir(elsewhere)
    run(lambda: None)  # predict: no exit


# --- issue 26: repeated keys, upper bounds, credentials in data.url ------------------------------


def test_a_repeated_key_or_section_is_refused_naming_both_lines(tmp_path):
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    epochs = next(i for i, line in enumerate(lines) if line.strip().startswith("epochs:")) + 1
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("  epochs: 5", "  epochs: 5\n  epochs: 7"), encoding="utf-8")
    with pytest.raises(StageError) as caught:
        params.load(path)
    assert f"train.epochs (lines {epochs} and {epochs + 1}) twice" in str(caught.value)
    path.write_text(text + "train:\n  epochs: 3\n", encoding="utf-8")
    with pytest.raises(StageError) as caught:
        params.load(path)
    message = str(caught.value)
    first = next(i for i, line in enumerate(lines) if line.startswith("train:")) + 1
    assert f"sets train (lines {first} and {len(lines) + 1}) twice" in message and "missing" not in message


@pytest.mark.parametrize(
    "key, value, bound",
    [
        ("train.batch_size", 100000000000000000000, "<= 1000000"),  # an OverflowError in Keras
        ("train.hidden_units", 10000000000, "<= 1000000"),  # out of memory in TensorFlow
        ("train.epochs", 10**9, "<= 100000"),
        ("features.batch_size", 10**6, "<= 4096"),
        ("features.image_size", 10**6, "<= 65536"),
    ],
)
def test_every_size_has_an_upper_bound(key, value, bound):
    message = problem(with_value(key, value))
    assert f"{key} must be an integer >= " in message and bound in message and repr(value) in message


@pytest.mark.parametrize(
    "url, channel",
    [
        ("https://alice:pw-9x8y@example.org/a.zip", "~/.netrc"),
        ("https://alice@example.org/a.zip", "~/.netrc"),
        ("https://example.org/a.zip?token=tk-9x8y", "DATA_TOKEN or DATA_HEADER"),
        ("https://bucket.s3.amazonaws.com/a.zip?X-Amz-Signature=sg-9x8y&X-Amz-Expires=60", "DATA_TOKEN"),
        # Issue 35: more spellings of a credential, each seen recorded in dvc.lock and data/source.
        ("https://example.org/a.zip?jwt=tk-9x8y", "DATA_TOKEN"),
        ("https://example.org/files/a.zip;token=tk-9x8y", "DATA_TOKEN"),
        ("https://example.org/files;jsessionid=tk-9x8y/a.zip", "DATA_TOKEN"),
        ("https://example.org/a.zip?t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI5eDh5In0.tk-9x8y", "DATA_TOKEN"),
        ("https://example.org/a.zip#access_token=tk-9x8y", "DATA_TOKEN"),
        ("https://storage.googleapis.com/b/a.zip?X-Goog-Signature=tk-9x8y", "DATA_TOKEN"),
    ],
)
def test_credentials_in_data_url_are_refused_without_showing_them(url, channel):
    message = problem(with_value("data.url", url))
    assert "data.url carries" in message and "dvc.lock would record" in message and channel in message
    assert "9x8y" not in message and "alice" not in message


@pytest.mark.parametrize(
    "url", ["https://[::1:8443/x.tar.gz?token=tk-9x8y", "https://example.org:84a3/x.zip?sig=tk-9x8y", "http://[x/a.zip"]
)
def test_a_data_url_that_does_not_parse_is_refused_without_showing_it(url):
    """It passed the credential check (a ValueError swallowed) and then crashed the source stage."""
    message = problem(with_value("data.url", url))
    assert "data.url" in message and "is not a URL that can be read" in message and "9x8y" not in message


def test_a_query_that_is_no_credential_is_fine():
    assert params.validate(with_value("data.url", "https://example.org/a.zip?download=1&x=2")).data.url


# ------------------------------------------------------------------------------------------- through dvc repro

LONG_TRAINING = 5  # epochs: train is held after its first (tests/hold), so any number above 2 will do


@pytest.mark.e2e
def test_params_edited_while_train_runs_fail_it_and_git_status_stays_clean(reproduced, tmp_path):
    """Through `dvc repro`: `dvc status` says up to date only when it is true, and a failed run leaves nothing for
    git to pick up: a params.yaml edit made while `train` runs fails the stage, and after the rerun `git status` is
    clean under data/ and models/ although DVC rolled back the ignore entries of that first run (treeverse/dvc#11091).
    """
    import subprocess
    import sys

    from synthetic.repos import dvc, git, read_params, stages_run, subprocess_env, write_params
    from tests.helpers import holding, wait_for

    repo = reproduced.copy(tmp_path / "repo")
    params = read_params(repo)
    params["split"]["seed"] += 1  # split and features run before train in the same `dvc repro`
    params["train"]["epochs"] = LONG_TRAINING
    write_params(repo, params)

    log, held = tmp_path / "repro.log", tmp_path / "train.held"
    with open(log, "wb") as output:  # a file, not a pipe, so a full pipe can never block dvc
        process = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro"],
            cwd=repo,
            env=holding(subprocess_env(), held, HOLD_TRAINING="1"),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        # train has loaded its params, finished its first epoch and waits (tests/hold): the edit lands while it
        # runs, however fast the machine trains.
        wait_for(held.exists, "train's first epoch", 480, process, log)
        params = read_params(repo)
        params["train"]["epochs"] = 2
        write_params(repo, params)
        held.with_suffix(".release").touch()
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text(errors="replace")
    assert process.returncode != 0, text[-4000:]
    assert f"params.yaml changed while the stage ran (train.epochs {LONG_TRAINING} -> 2)" in text, text[-4000:]
    assert stages_run(text) == ["split", "features", "audit", "train"]

    # dvc.lock must not claim the long-trained head was made with epochs: 2.
    assert dvc(repo, "status", "-q", check=False).returncode == 1
    assert "train" in dvc(repo, "status").stdout
    porcelain = git(repo, "status", "--porcelain", "--untracked-files=all").stdout
    addable = [line for line in porcelain.splitlines() if line[3:].startswith(("data/", "models/"))]
    assert addable == [], porcelain

    rerun = dvc(repo, "repro", "evaluate")  # train again, and what reads the head next (the rest reads it the same way)
    assert stages_run(f"{rerun.stdout}\n{rerun.stderr}") == ["train", "evaluate"]
    assert "Data and pipelines are up to date." in dvc(repo, "status", "evaluate").stdout
    porcelain = git(repo, "status", "--porcelain", "--untracked-files=all").stdout
    changed = [line[3:] for line in porcelain.splitlines()]
    assert changed and not [p for p in changed if p.startswith(("data/", "models/"))], porcelain
    assert all(p in ("dvc.lock", "params.yaml") or p.startswith("metrics/") for p in changed), porcelain
