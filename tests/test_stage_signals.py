"""However the features stage ends, its decoding workers end with it and its shared memory is freed.

Real signals to a real `python -m stages.features` on a small generated image set, sent while the workers are
decoding into shared memory; every wait is bounded and watches for an event (a process gone, a file gone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from synthetic.repos import small_params, stages_restored, stages_run, subprocess_env
from tests.helpers import (
    FEATURES_ARGS,
    dvc,
    features_project,
    holding_decoding,
    make_repo,
    output_files,
    stage_command,
    wait_for,
)
from transfer.core import signals

pytestmark = pytest.mark.e2e

SHM = Path("/dev/shm")


def shared_memory_of(pid: int) -> set[str]:
    """Names of the /dev/shm files (shared-memory segments, named semaphores) a process has mapped."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return set()
    return {Path(line.split(maxsplit=5)[5].removesuffix(" (deleted)")).name for line in lines if "/dev/shm/" in line}


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def held(log: Path) -> Path:
    """Where the worker held on the last image writes its pid (tests/hold/sitecustomize.py)."""
    return log.with_suffix(".held")


def start_stage(project: Path, log: Path, new_session: bool = False) -> subprocess.Popen:
    command, env = stage_command("features", *FEATURES_ARGS)
    # Held on its last image: still decoding when the signal comes, however fast the machine.
    env = holding_decoding(env, project / "data/split", held(log))
    with open(log, "wb") as output:  # a file, not a pipe, so that a full pipe can never block the stage
        return subprocess.Popen(
            command, cwd=project, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=new_session
        )


def wait_until_decoding(process: subprocess.Popen, log: Path) -> tuple[list[psutil.Process], set[str]]:
    """Once every worker has mapped the features stage's shared memory and one is held on the last image: (the
    processes under `process`, the /dev/shm names the stage has mapped). `process` is the stage, or a `dvc repro`
    running it."""

    def decoding():
        assert process.poll() is None, log.read_text()
        if not held(log).exists():
            return None
        try:
            processes = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            commands = {child.pid: child.cmdline() for child in processes}
        except psutil.NoSuchProcess:
            return None
        stage = [p for p in processes if "stages.features" in commands[p.pid] and "-c" not in commands[p.pid]]
        workers = [p for p in processes if "spawn_main" in " ".join(commands[p.pid])]
        segments = shared_memory_of(stage[0].pid) if stage else set()
        if workers and segments and all(segments & shared_memory_of(worker.pid) for worker in workers):
            return processes[1:], segments
        return None

    return wait_for(decoding, "the workers decode into shared memory", timeout=240)


def kill_leftovers(processes: list[psutil.Process]) -> None:
    for child in processes:  # only the processes this test started, by pid
        if not gone(child):
            child.kill()


def kill_while_decoding(project: Path, log: Path, kill, new_session: bool = False) -> subprocess.Popen:
    """Start the stage, call kill(process, children) once its workers decode into shared memory, then wait until
    the stage has exited, every worker is gone and the shared memory is freed. Returns the ended process."""
    process = start_stage(project, log, new_session=new_session)
    children = []
    try:
        children, segments = wait_until_decoding(process, log)
        kill(process, children)
        process.wait(timeout=120)
        wait_for(lambda: all(gone(child) for child in children), "every worker has exited", timeout=30)
        wait_for(lambda: not (segments & set(os.listdir(SHM))), "the shared memory is freed", timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_leftovers(children)
    return process


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_workers_end_and_memory_is_freed_when_the_main_process_is_killed(tmp_path, signum):
    """SIGKILL to the main process only is what the OOM killer does; SIGTERM is `kill PID`."""
    project = features_project(tmp_path / "project")
    log = tmp_path / "stage.log"
    process = kill_while_decoding(project, log, lambda process, _: os.kill(process.pid, signum))
    if signum == signal.SIGTERM:  # cleaned up as after any failure: no scratch output, a clear status
        assert process.returncode == 128 + signal.SIGTERM, log.read_text()
        assert "Traceback" not in log.read_text()
        assert sorted(p.name for p in (project / "data").iterdir()) == ["images", "split"]


@pytest.mark.parametrize(  # SIGTERM to every stage: tests/test_stage_faults.py
    ("signum", "status", "line"),
    [(signal.SIGINT, 130, "interrupted")],
    ids=["ctrl-c"],
)
def test_ctrl_c_prints_one_line_and_leaves_nothing_behind(tmp_path, signum, status, line):
    """A terminal's Ctrl-C sends SIGINT to the whole foreground process group: the stage and every worker; a
    service manager or CI runner stopping a job sends SIGTERM to the whole group."""
    project = features_project(tmp_path / "project")
    log = tmp_path / "stage.log"
    process = kill_while_decoding(project, log, lambda process, _: os.killpg(process.pid, signum), new_session=True)
    output = log.read_text()
    assert process.returncode == status, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert output.splitlines()[-1] == line
    assert sorted(p.name for p in (project / "data").iterdir()) == ["images", "split"]


def test_a_killed_worker_is_named_in_one_line(tmp_path):
    """The OOM killer may pick a decoding worker instead of the main process."""
    project = features_project(tmp_path / "project")
    log = tmp_path / "stage.log"
    killed = []

    def kill_a_worker(_, children):
        # The one decoding (held on the last image), whose answer the stage waits for.
        killed.append(next(child for child in children if child.pid == int(held(log).read_text())))
        killed[0].kill()

    process = kill_while_decoding(project, log, kill_a_worker)
    worker = killed[0]
    output = log.read_text()
    assert process.returncode == 1, output
    assert "Traceback" not in output, output
    last = output.splitlines()[-1]
    assert last.startswith(f"error: an image decoding worker (pid {worker.pid}) was killed by SIGKILL"), output
    assert sorted(p.name for p in (project / "data").iterdir()) == ["images", "split"]


def test_a_killed_process_group_leaves_nothing_and_the_next_run_gives_a_clean_runs_bytes(tmp_path, archives):
    """`kill -9 -PGID` (a CI job cancelled, a container stopped) kills the stage, its workers and the resource
    tracker at once: nothing can clean up then. What is left must not outlive the next `dvc repro`, whether DVC
    restores the stage's outputs from its run-cache or runs it again, and a run after the kill gives exactly the
    bytes of a run never killed."""
    archive, _ = archives["user_zip"]
    repo = make_repo(tmp_path / "repo", small_params(str(archive), None))
    dvc(repo, "repro", "features")  # the clean run: its features are now in DVC's run-cache too
    data = repo / "data"
    listing, expected = sorted(os.listdir(data)), output_files(data / "features")

    log = tmp_path / "repro.log"
    command = [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "features"]  # the same run, again
    env = holding_decoding(subprocess_env(), data / "split", held(log))  # still decoding when the group is killed
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=repo, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    children = []
    try:
        children, segments = wait_until_decoding(process, log)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        wait_for(lambda: all(gone(child) for child in children), "every process of the group has exited", 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_leftovers(children)

    assert stages_restored(dvc(repo, "repro", "features").stdout) == ["features"]  # from the run-cache
    assert sorted(os.listdir(data)) == listing  # no scratch beside the output
    assert output_files(data / "features") == expected  # nor inside it

    assert stages_run(dvc(repo, "repro", "--force", "--single-item", "features").stdout) == ["features"]
    assert sorted(os.listdir(data)) == listing
    assert output_files(data / "features") == expected  # byte for byte the clean run's
    assert not segments & set(os.listdir(SHM))  # the killed run's shared memory is gone


# The exception a signal handler raises can arrive changed when the signal lands inside C code: inside TensorFlow's
# tracing, a SIGTERM's exception once surfaced as "SystemError: Objects/listobject.c:338: bad argument to internal
# function", with a traceback and exit 1. Whatever arrives after the signal, the signal is what is reported.
def test_sigterm_whose_exception_arrives_changed_still_ends_as_sigterm(capsys):
    with pytest.raises(signals.Terminated) as stop, signals.termination_cleans_up():
        try:
            signal.raise_signal(signal.SIGTERM)
        except signals.Terminated:
            raise SystemError("bad argument to internal function") from None
    assert stop.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "terminated (SIGTERM)\n"


def test_ctrl_c_whose_exception_arrives_changed_is_still_one_line(capsys):
    from transfer.core import cli

    def stage():
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise SystemError("bad argument to internal function") from None

    with pytest.raises(SystemExit) as exited:
        cli.run(stage)
    assert exited.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_ctrl_c_inside_backend_code_takes_effect_when_that_code_returns(capsys):
    # Raised inside TensorFlow's C++ code, a KeyboardInterrupt was printed there as a traceback (about one Ctrl-C in
    # ten during extraction): the stage holds signals back while the backend runs (transfer/signals.py).
    from transfer.core import cli, signals

    reached = []

    def stage():
        with signals.deferred():
            signal.raise_signal(signal.SIGINT)
            reached.append("the backend call ran to its end")
        reached.append("the stage went on")

    with pytest.raises(SystemExit) as exited:
        cli.run(stage)
    assert reached == ["the backend call ran to its end"]
    assert exited.value.code == 130 and capsys.readouterr().err == "interrupted\n"
