"""Test instrumentation, imported at start-up by every Python process that has this folder on PYTHONPATH (dvc, a
stage, the features stage's spawned decoding workers), so that a test acts while a stage is provably mid-run,
however fast the machine would finish it. Inert unless one of these is set:

- HOLD_DECODING: opening an image whose path ends with it writes the process id to the file HOLD_MARK names,
  then waits until the process is killed;
- HOLD_TRAINING: after the first epoch DVCLive logs, write the process id to HOLD_MARK, then wait until the file
  HOLD_MARK.release exists.
"""

import os
import time
from pathlib import Path


def _mark() -> Path:
    mark = Path(os.environ["HOLD_MARK"])
    mark.with_suffix(".tmp").write_text(str(os.getpid()))
    os.replace(mark.with_suffix(".tmp"), mark)
    return mark


if os.environ.get("HOLD_DECODING"):
    from PIL import Image

    _open = Image.open

    def _held_open(fp, *args, **kwargs):
        if str(getattr(fp, "name", fp)).endswith(os.environ["HOLD_DECODING"]):  # a path, or a file opened from one
            _mark()
            while True:  # the decoding workers ignore SIGINT; the stage's clean-up or the test kills this one
                time.sleep(60)
        return _open(fp, *args, **kwargs)

    Image.open = _held_open

if os.environ.get("HOLD_TRAINING"):
    from dvclive import Live

    _next_step = Live.next_step

    def _held_next_step(self, *args, **kwargs):
        _next_step(self, *args, **kwargs)
        if self.step == 1:
            release = _mark().with_suffix(".release")
            while not release.exists():
                time.sleep(0.02)

    Live.next_step = _held_next_step
