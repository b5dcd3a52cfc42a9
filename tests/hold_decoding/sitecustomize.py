"""Test instrumentation, imported at start-up by every Python process that has this folder on PYTHONPATH (the
stage, dvc, the spawned decoding workers). With HOLD_DECODING set, opening an image whose path ends with it
writes the process id to the file HOLD_DECODING_MARK names, then waits until the process is killed. A test holds
the features stage mid-run this way, so that what it does next (a signal, a kill) lands while the stage runs,
however fast the machine finishes the rest."""

import os
import time

HOLD = os.environ.get("HOLD_DECODING")

if HOLD:
    from PIL import Image

    _open = Image.open

    def _held_open(fp, *args, **kwargs):
        if str(fp).endswith(HOLD):
            mark = os.environ["HOLD_DECODING_MARK"]
            with open(mark + ".tmp", "w") as file:
                file.write(str(os.getpid()))
            os.replace(mark + ".tmp", mark)
            while True:  # the decoding workers ignore SIGINT; the stage's clean-up or the test kills this one
                time.sleep(60)
        return _open(fp, *args, **kwargs)

    Image.open = _held_open
