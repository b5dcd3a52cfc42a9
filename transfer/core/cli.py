"""The command-line tail every stage shares: parse its paths, run it, turn user errors into one line.

Whatever ends a stage ends it in one line and a non-zero status: a StageError, a file system error (a full disk, a
read-only folder, no permission: transfer/core/files.py names it), Ctrl-C, SIGTERM or SIGHUP; only a bug prints a
traceback. Everything the stage prints passes through transfer/core/redact.py's mask_secrets.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from transfer.core import params, signals
from transfer.core.errors import StageError
from transfer.core.files import filesystem_error, is_disk_full, is_filesystem_error
from transfer.core.redact import mask_secrets


class _Masked:
    """A text stream that hides every credential the process was given (transfer/core/redact.py) in what it writes:
    messages, progress bars, warnings and a bug's traceback alike."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(mask_secrets(text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _masked_output() -> Iterator[None]:
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Masked(sys.stdout), _Masked(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def run(main: Callable[[], object]) -> None:
    """Run a stage's CLI entry point, turning StageError and Ctrl-C into a message and a non-zero exit.

    A stage that read params.yaml fails at the end if the keys it read were edited meanwhile: DVC records
    params.yaml as it is after the command exits.
    """
    with _masked_output():
        _run(main)


def _run(main: Callable[[], object]) -> None:
    interrupted: list[int] = []
    params.forget()
    try:
        # SIGTERM (`kill`, a CI job's timeout) and SIGHUP end every stage as Ctrl-C does: its `finally` clauses
        # remove the scratch, and one line says so (transfer/core/signals.py).
        with signals.ctrl_c_raises(interrupted), signals.termination_cleans_up():
            main()
        params.check_unchanged()
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except (OSError, RuntimeError) as error:
        if not is_filesystem_error(error):  # writers outside transfer/core/files.py's helpers: still one clear line
            raise
        filename = getattr(error, "filename", None)  # an OSError's
        folder = Path(filename).parent if filename else Path.cwd()
        kept = "the file it was writing may be incomplete, and rerunning the stage replaces it"
        print(f"error: {filesystem_error(error, folder, kept=kept if is_disk_full(error) else None)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception:
        # KeyboardInterrupt can arrive changed when Ctrl-C lands inside C code (a SystemError from TensorFlow's
        # tracing): after Ctrl-C, whatever arrives is the interruption.
        if interrupted:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        # A bug: its traceback, printed here so that it passes the masking too.
        print(traceback.format_exc(), end="", file=sys.stderr)
        sys.exit(1)


def stage(main: Callable[..., object], doc: str, options: dict[str, dict] | None = None, **paths: str) -> None:
    """The tail of every stage module: `paths` (name=help, in order) become positional Path arguments and
    `options` ("--name": add_argument keywords) optional ones, all passed to main by name; then run() it.

        if __name__ == "__main__":
            cli.stage(main, __doc__, images_dir="class folders of images (data/images)", split_dir="...")
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, help in paths.items():
        parser.add_argument(name, type=Path, help=help)
    for flag, keywords in (options or {}).items():
        parser.add_argument(flag, **keywords)
    args = parser.parse_args()
    run(lambda: main(**vars(args)))
