"""tools/verify.py, the CI gate: it passes on a fresh clone of a committed run (no outputs, no remote) and fails,
naming the stage and the reason, for every way a committed dvc.lock can be stale; --outputs and --rerun likewise.

A two-stage pipeline without TensorFlow (prep -> report), so each real `dvc repro` takes seconds. One module
fixture runs it once and commits; every test works in a `git clone` of that run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synthetic.repos import clone, commit_all, dvc, git, run, subprocess_env
from tests.helpers import wait_for
from tools import verify

pytestmark = pytest.mark.e2e

PREP = """
import yaml
scale = yaml.safe_load(open("params.yaml"))["prep"]["scale"]
open("mid.txt", "w").write(open("data.txt").read() * scale)
"""
REPORT = """
import json, os, random, yaml
p = yaml.safe_load(open("params.yaml"))["report"]
n = len(open("mid.txt").read().splitlines())
os.makedirs("metrics", exist_ok=True)
score = round(0.5 + p["a"] / 100 + p["noise"] * random.random(), 12)
json.dump({"lines": n, "score": score}, open("metrics/m.json", "w"))
"""
PIPELINE = {
    "stages": {
        "prep": {
            "cmd": "python prep.py",
            "deps": ["prep.py", "data.txt"],
            "params": ["prep.scale"],
            "outs": ["mid.txt"],
        },
        "report": {
            "cmd": "python report.py",
            "deps": ["report.py", "mid.txt"],
            "params": ["report"],
            "outs": [{"metrics/m.json": {"cache": False}}],
        },
    }
}
PARAMS = {"prep": {"scale": 2}, "report": {"a": 1, "noise": 0.0}}


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("verify") / "repo"
    repo.mkdir()
    (repo / "prep.py").write_text(PREP)
    (repo / "report.py").write_text(REPORT)
    (repo / "data.txt").write_text("a\nb\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.autostage", "true")
    dvc(repo, "repro")
    dvc(repo, "remote", "add", "-d", "storage", str(repo.parent / "remote"))
    dvc(repo, "push")
    commit_all(repo, "run")
    return repo


def verify_in(repo: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = verify.main(["--repo", str(repo), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def edit_params(repo: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_passes_on_a_fresh_clone_without_outputs_where_dvc_status_cannot_tell(committed, tmp_path, capsys):
    repo = clone(committed, tmp_path / "c")
    assert not (repo / "mid.txt").exists()
    status = dvc(repo, "status", "-q", check=False)
    assert status.returncode == 1  # `dvc status` without the outputs: everything "deleted", stale or not
    code, out, err = verify_in(repo, capsys=capsys)
    assert code == 0, err
    assert out.startswith("verify: OK: dvc.lock is up to date for 2 stage(s): 4 dependency hashes, 2 params and 1")


def test_a_committed_param_change_names_the_stage_the_key_and_both_values(committed, tmp_path, capsys):
    repo = clone(committed, tmp_path / "c")
    edit_params(repo, "prep", "scale", 3)
    edit_params(repo, "report", "a", 5)  # inside a whole-section param: the leaf key is named
    commit_all(repo, "params without dvc repro")
    code, _, err = verify_in(repo, capsys=capsys)
    assert code == 1
    assert "verify: FAILED: 2 problem(s); stale stage(s): prep, report" in err
    assert "  - prep: param prep.scale: 2 -> 3 (params.yaml)" in err
    assert "  - report: param report.a: 1 -> 5 (params.yaml)" in err


@pytest.mark.parametrize("path", ["prep.py", "data.txt"])
def test_committed_stage_code_or_data_change_names_the_file(committed, tmp_path, capsys, path):
    repo = clone(committed, tmp_path / "c")
    with open(repo / path, "a") as file:
        file.write("\n# changed\n" if path.endswith(".py") else "c\n")
    commit_all(repo, "change without dvc repro")
    code, _, err = verify_in(repo, capsys=capsys)
    assert code == 1
    assert f"  - prep: {path} changed (file md5 " in err
    assert "  - report: downstream of stale stage prep" in err


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda s: s["prep"].update(cmd="python prep.py --fast"),
            "prep: command changed: 'python prep.py' in dvc.lock",
        ),
        (lambda s: s["report"]["deps"].append("data.txt"), "report: dependency data.txt added to dvc.yaml"),
        (lambda s: s["prep"]["params"].append("report.a"), "prep: param report.a: '(absent)' -> 1 (params.yaml)"),
        (lambda s: s.update(extra={"cmd": "true", "outs": ["x"]}), "extra: not in dvc.lock"),
    ],
)
def test_committed_dvc_yaml_change_names_the_stage(committed, tmp_path, capsys, edit, message):
    repo = clone(committed, tmp_path / "c")
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    edit(spec["stages"])
    (repo / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    commit_all(repo, "dvc.yaml")
    code, _, err = verify_in(repo, capsys=capsys)
    assert code == 1 and message in err, err


def test_a_stage_rerun_alone_leaves_its_consumer_stale(committed, tmp_path, capsys):
    repo = clone(committed, tmp_path / "c")
    edit_params(repo, "prep", "scale", 4)
    dvc(repo, "repro", "--single-item", "prep")
    commit_all(repo, "prep only")
    code, _, err = verify_in(repo, capsys=capsys)
    assert code == 1 and "stale stage(s): report" in err
    assert "  - report: mid.txt is not what stage prep made (md5 " in err


def test_an_edited_metric_kept_in_git_and_an_uncommitted_lock_are_named(committed, tmp_path, capsys):
    repo = clone(committed, tmp_path / "c")
    (repo / "metrics/m.json").write_text('{"lines": 4, "score": 0.99}')
    commit_all(repo, "hand-edited metric")
    code, _, err = verify_in(repo, capsys=capsys)
    assert code == 1 and "  - report: output metrics/m.json (kept in git) is not what dvc.lock records" in err
    # With core.autostage, `dvc repro` stages dvc.lock: `git diff --exit-code dvc.lock` (worktree vs index) then
    # cannot fail. verify compares with HEAD.
    repo = clone(committed, tmp_path / "d")
    dvc(repo, "pull")
    edit_params(repo, "prep", "scale", 5)
    dvc(repo, "repro")
    assert git(repo, "diff", "--exit-code", "dvc.lock", check=False).returncode == 0  # the gate that cannot fail
    assert git(repo, "diff", "--exit-code", "HEAD", "--", "dvc.lock", check=False).returncode == 1
    code, _, err = verify_in(repo, capsys=capsys)
    assert code == 1 and "  - dvc.lock differs from the one committed at HEAD" in err
    assert "    git add dvc.lock && git commit" in err  # the fix, not `dvc repro`


def test_cannot_check_exits_2(committed, tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert verify_in(tmp_path / "plain", capsys=capsys)[0] == 2
    repo = clone(committed, tmp_path / "c")
    (repo / "dvc.yaml").write_text("stages:\n  prep:\n    cmd: [unclosed\n")
    code, _, err = verify_in(repo, capsys=capsys)
    assert code == 2 and err.startswith("verify: cannot check")
    with pytest.raises(SystemExit) as usage:
        verify.main(["--repo", str(repo), "--tolerance", "0.1"])
    assert usage.value.code == 2


def test_outputs_after_pull_match_and_a_changed_or_missing_output_is_named(committed, tmp_path, capsys):
    repo = clone(committed, tmp_path / "c")
    dvc(repo, "pull")
    code, out, _ = verify_in(repo, "--outputs", capsys=capsys)
    assert code == 0 and "2 outputs in the working tree match dvc.lock" in out
    (repo / "mid.txt").write_text("tampered\n")
    code, _, err = verify_in(repo, "--outputs", capsys=capsys)
    assert code == 1 and "  - prep: output mid.txt is not what dvc.lock records (md5 " in err
    assert "  To fix:\n    dvc checkout prep\n" in err  # the command that fixes it, not `dvc repro`
    (repo / "mid.txt").unlink()
    code, _, err = verify_in(repo, "--outputs", capsys=capsys)
    assert code == 1 and "  - prep: output mid.txt is missing" in err and "    dvc pull prep\n" in err


def test_rerun_passes_on_a_deterministic_run_and_names_what_differs_otherwise(committed, tmp_path, capsys):
    code, out, err = verify_in(committed, "--rerun", capsys=capsys)
    assert code == 0, err
    assert "a rerun from scratch of HEAD gave the same output hashes and metrics (tolerance 1e-06)" in out

    repo = clone(committed, tmp_path / "noisy")
    edit_params(repo, "report", "noise", 1e-9)  # a metric that moves in its last digits from run to run
    dvc(repo, "repro")
    commit_all(repo, "noisy")
    committed_score = json.loads((repo / "metrics/m.json").read_text())["score"]
    code, _, err = verify_in(repo, "--rerun", capsys=capsys)
    assert code == 1 and "  - rerun: metrics/m.json: committed md5 " in err
    assert verify_in(repo, "--rerun", "--metrics-only", capsys=capsys)[0] == 0  # within the default 1e-6
    code, _, err = verify_in(repo, "--rerun", "--metrics-only", "--tolerance", "0", capsys=capsys)
    assert code == 1 and f"  - rerun: metrics/m.json: score committed {committed_score!r}, rerun " in err

    (repo / "prep.py").write_text("raise SystemExit('broken')\n")
    commit_all(repo, "broken stage")
    code, _, err = verify_in(repo, "--rerun", capsys=capsys)
    assert code == 2 and "verify: cannot check: the rerun failed" in err


def test_rerun_of_a_stage_says_first_what_it_runs_and_reruns_only_that_and_its_dependencies(
    committed, tmp_path, capsys
):
    repo = clone(committed, tmp_path / "target")
    edit_params(repo, "report", "noise", 1e-9)  # report's metric would differ on any rerun of report
    dvc(repo, "pull")
    dvc(repo, "repro")
    commit_all(repo, "noisy report")
    code, out, err = verify_in(repo, "--rerun", "prep", capsys=capsys)
    assert code == 0, err  # report was not rerun, so its committed metric stands
    assert "verify: --rerun will rerun from scratch: prep; roughly" in out
    assert out.index("will rerun from scratch") < out.index("verify: OK")  # said before the run
    assert "a rerun from scratch of prep and the stages it depends on of HEAD gave the same" in out
    code, out, err = verify_in(repo, "--rerun", "report", capsys=capsys)
    assert "will rerun from scratch: prep, report;" in out and code == 1 and "metrics/m.json" in err
    code, _, err = verify_in(repo, "--rerun", "nosuch", capsys=capsys)
    assert code == 2 and "verify: --rerun nosuch:" in err and "Traceback" not in err


def test_a_second_pipeline_is_checked_once_it_has_been_run(committed, tmp_path, capsys):
    # A second dvc.yaml in a sub-folder, which `dvc repro` (no target) does not run.
    repo = clone(committed, tmp_path / "sub")
    (repo / "release").mkdir()
    stage = {"cmd": "python -c \"open('copy.txt', 'w').write(open('mid.txt').read())\"", "wdir": ".."}
    stage.update(deps=["mid.txt"], outs=["copy.txt"])
    (repo / "release" / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"copy": stage}}))
    commit_all(repo, "a second pipeline, never run")
    code, out, err = verify_in(repo, capsys=capsys)
    assert code == 0, err
    assert "release/dvc.yaml:copy: not checked (no release/dvc.lock: never run)" in out + err

    dvc(repo, "pull", "dvc.yaml")
    dvc(repo, "repro", "release/dvc.yaml")
    commit_all(repo, "exported")
    assert verify_in(repo, capsys=capsys)[0] == 0
    edit_params(repo, "prep", "scale", 3)
    dvc(repo, "repro")  # the top pipeline only: the second one's copy is now older than mid.txt
    commit_all(repo, "rerun without the second pipeline")
    code, _, err = verify_in(repo, capsys=capsys)
    assert code == 1 and "release/dvc.yaml:copy" in err and "    dvc repro release/dvc.yaml " in err


def test_a_lock_committed_without_its_metrics_fails_and_names_the_fix(committed, tmp_path, capsys):
    repo = clone(committed, tmp_path / "c")
    git(repo, "rm", "-q", "metrics/m.json")  # as if never added: CI's clone has no metrics/
    git(repo, "commit", "-qm", "dvc.lock without metrics/")
    code, _, err = verify_in(repo, capsys=capsys)
    assert code == 1 and "  - report: output metrics/m.json is in dvc.lock but not committed" in err, err
    assert "    git add metrics/m.json" in err


def test_every_lock_must_be_committed(committed, tmp_path, capsys):
    repo = clone(committed, tmp_path / "c")
    dvc(repo, "pull")
    (repo / "release").mkdir()
    stage = {"cmd": "python -c \"open('copy.txt', 'w').write(open('mid.txt').read())\"", "wdir": ".."}
    stage.update(deps=["mid.txt"], outs=["copy.txt"])
    (repo / "release" / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"copy": stage}}))
    dvc(repo, "repro", "release/dvc.yaml")
    git(repo, "add", "release/dvc.yaml", ".gitignore")
    git(repo, "reset", "-q", "release/dvc.lock")
    git(repo, "commit", "-qm", "the pipeline, not its lock")
    code, _, err = verify_in(repo, capsys=capsys)
    assert code == 1 and "  - release/dvc.lock is not committed" in err, err
    assert "    git add release/dvc.lock && git commit" in err


@pytest.mark.parametrize("tolerance", ["nan", "inf", "-1", "x"])
def test_nonsense_arguments_are_refused_before_any_work(committed, tolerance, capsys):
    with pytest.raises(SystemExit) as usage:
        verify.main(["--repo", str(committed), "--rerun", "--tolerance", tolerance])
    assert usage.value.code == 2 and "--tolerance" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        verify.main(["--repo", str(committed / "no-such-folder")])
    assert usage.value.code == 2


def toy_project(path: Path, files: dict[str, str], pipeline: dict, subdir: bool = False, exists_ok=False) -> Path:
    """A git repository at path holding a DVC project (at path, or in path/proj with `dvc init --subdir`), run once
    and committed."""
    project = path / "proj" if subdir else path
    project.mkdir(parents=True, exist_ok=exists_ok)
    for name, text in files.items():
        (project / name).write_text(text)
    (project / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    (project / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "t@example.com")
    git(path, "config", "user.name", "t")
    dvc(project, "init", "-q", *(["--subdir"] if subdir else []))
    dvc(project, "repro")
    commit_all(path, "run")
    return project


def test_a_project_in_a_sub_folder_of_its_git_repository_is_checked_and_rerun_from_any_folder(tmp_path, capsys):
    files = {"prep.py": PREP, "report.py": REPORT, "data.txt": "a\nb\n"}
    project = toy_project(tmp_path / "outer", files, PIPELINE, subdir=True)
    code, out, err = verify_in(project, "--rerun", capsys=capsys)
    assert code == 0 and "a rerun from scratch of HEAD gave the same output hashes and metrics" in out, err
    # `python -m tools.verify` from a folder inside the project, and from one outside it with --repo
    inside = run(project / "metrics", sys.executable, "-m", "tools.verify", check=False)
    assert inside.returncode == 0 and "verify: OK" in inside.stdout, inside.stdout + inside.stderr
    outside = run(tmp_path, sys.executable, "-m", "tools.verify", "--repo", str(project), check=False)
    assert outside.returncode == 0 and "verify: OK" in outside.stdout, outside.stdout + outside.stderr


SLOW = """
import os, pathlib, time
pidfile = os.environ.get("VERIFY_TEST_PIDFILE")
if pidfile:  # set for the rerun only: the stage waits to be ended
    pathlib.Path(pidfile).write_text(str(os.getpid()))
    time.sleep(600)
open("out.txt", "w").write("x")
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_rerun_ends_it_like_a_stage(tmp_path, signum, status):
    slow = {"stages": {"slow": {"cmd": "python slow.py", "deps": ["slow.py"], "outs": ["out.txt"]}}}
    project = toy_project(tmp_path / "repo", {"slow.py": SLOW}, slow)
    scratch, pidfile = tmp_path / "tmp", tmp_path / "stage.pid"
    scratch.mkdir()
    env = {**subprocess_env(), "TMPDIR": str(scratch), "VERIFY_TEST_PIDFILE": str(pidfile)}
    log = tmp_path / "verify.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.verify", "--rerun"], cwd=project, env=env, stdout=out, stderr=out
        )
        stage = int(wait_for(lambda: pidfile.is_file() and pidfile.read_text(), "the stage runs", 120, process, log))
        process.send_signal(signum)
        assert process.wait(timeout=120) == status, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text and text.strip().splitlines()[-1] in ("verify: interrupted", "terminated (SIGTERM)")
    assert list(scratch.iterdir()) == []  # the temporary clone is gone
    wait_for(lambda: not alive(stage), "the stage has ended", 30)


def test_a_committed_link_to_a_file_not_on_this_machine_is_a_note_not_a_traceback(tmp_path, capsys):
    # What repositories made before data/source left git hold: a link to one machine's archive, in git.
    archive = tmp_path / "archive.zip"
    archive.write_text("the archive\n")
    source = {"cmd": f"ln -sfn {archive} data/source", "outs": [{"data/source": {"cache": False, "persist": True}}]}
    copy = {"cmd": "cp data/source out.txt", "deps": ["data/source"], "outs": ["out.txt"]}
    (tmp_path / "repo" / "data").mkdir(parents=True)
    project = toy_project(tmp_path / "repo", {}, {"stages": {"source": source, "copy": copy}}, exists_ok=True)
    archive.rename(tmp_path / "elsewhere.zip")  # CI's machine, a colleague's
    for args in ((), ("--outputs",)):
        code, out, err = verify_in(project, *args, capsys=capsys)
        assert code == 0 and "Traceback" not in err, err
        assert f"verify: note: source: data/source not checked (a link to {archive}, which is not on this" in out


def test_rerun_reproduces_and_compares_every_committed_lock(committed, tmp_path, capsys):
    repo = clone(committed, tmp_path / "c")
    dvc(repo, "pull")
    (repo / "release").mkdir()
    noisy = "python -c \"import random; open('r.txt', 'w').write(open('mid.txt').read() + str(random.random()))\""
    stage = {"cmd": noisy, "wdir": "..", "deps": ["mid.txt"], "outs": ["r.txt"]}
    (repo / "release" / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"noisy": stage}}))
    dvc(repo, "repro", "release/dvc.yaml")
    commit_all(repo, "a second pipeline whose output differs from run to run")
    assert verify_in(repo, capsys=capsys)[0] == 0
    code, _, err = verify_in(repo, "--rerun", capsys=capsys)
    assert code == 1 and "  - rerun: release/dvc.lock: r.txt: committed md5 " in err, err
