"""A full disk or a file-size limit while a stage writes: one clear error, nothing half-written where a stage reads.

The fault is real: the writer runs in a child process under `RLIMIT_FSIZE`, where the kernel answers a write past
the limit with EFBIG ("File too large"), as it answers ENOSPC on a full disk. The download and extract stages are
tested the same way in test_download.py and test_extract.py."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from synthetic.repos import ROOT, subprocess_env

WRITERS = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np

    from transfer.core.cli import run
    from transfer.features.cache import write_features
    from transfer.core.files import atomic_output, write_json

    out = Path(sys.argv[2])


    class Identity:  # stands in for the backbone: the features are the batch itself
        start = staticmethod(lambda batch: batch)
        finish = staticmethod(lambda rows: rows)


    def features():  # the features stage's writer, in its atomic folder
        with atomic_output(out / "features") as tmp:
            (tmp / "train").mkdir(parents=True)
            batches = [np.ones((100, 1000), np.float32)] * 4
            write_features(Identity, batches, 400, 1000, tmp / "train" / "features.npy", "train")


    def weights():  # the train stage's model.save: Keras writes the weights with h5py
        import h5py

        with atomic_output(out / "head.keras", suffix=".keras") as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("w", data=np.ones(200_000))


    def metrics():
        write_json(out / "metrics.json", {"values": list(range(100_000))})


    def loose():  # a write outside the helpers: cli.run still says it in one line
        (out / "loose.bin").write_bytes(bytes(500_000))


    run(globals()[sys.argv[1]])
    """
)


def run_limited(case: str, out, limit: int = 100_000) -> subprocess.CompletedProcess:
    import resource

    return subprocess.run(
        [sys.executable, "-c", WRITERS, case, str(out)],
        cwd=ROOT,
        env={**subprocess_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["features", "weights", "metrics", "loose"])
def test_file_size_limit_in_a_writer_is_one_clear_error(tmp_path, case):
    out = tmp_path / "out"
    out.mkdir()
    result = run_limited(case, out)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "file-size limit" in line and "ulimit -f" in line
    # The helpers know the folder; a stray write is named by the folder the stage runs in.
    assert f"writing in {ROOT if case == 'loose' else out} " in line
    left = sorted(p.name for p in out.iterdir())
    assert left == (["loose.bin"] if case == "loose" else [])  # no temporary, no half-written output


def test_full_disk_message_names_the_folder_the_bytes_and_what_to_do(tmp_path):
    import errno

    from transfer.core.errors import StageError
    from transfer.core.files import atomic_output

    with pytest.raises(StageError) as caught, atomic_output(tmp_path / "big.npy", needed=123_456_789) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    message = str(caught.value)
    assert f"no space left on the disk holding {tmp_path}" in message and "123,456,789 bytes are needed" in message
    assert "bytes are free there" in message and "Free space there" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
        (errno.ENAMETOOLONG, "longer than the file system takes"),
        (errno.EIO, "input/output error"),
    ],
)
def test_a_file_system_error_anywhere_in_a_stage_is_one_line_naming_the_file(code, said, capsys):
    """A read-only data/ gave `OSError: [Errno 30] Read-only file system` tracebacks in download and extract; every
    stage goes through cli.run, which names the file and what to do (the fault sweep runs them all for real:
    tests/test_stage_faults.py)."""
    from transfer.core import cli

    def stage():
        raise OSError(code, os.strerror(code), "data/.images.unpack")

    with pytest.raises(SystemExit) as exited:
        cli.run(stage)
    err = capsys.readouterr().err
    assert exited.value.code == 1 and "Traceback" not in err, err
    (line,) = err.splitlines()
    assert line.startswith("error: cannot use data/.images.unpack: ") and said in line, line


def test_a_bug_is_still_a_traceback(capsys):
    from transfer.core import cli

    with pytest.raises(SystemExit) as exited:
        cli.run(lambda: {}["missing"])
    assert exited.value.code == 1 and "Traceback" in capsys.readouterr().err
