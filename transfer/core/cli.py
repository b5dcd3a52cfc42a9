"""The command-line tail every stage shares: parse its paths, run it, turn user errors into one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from transfer.core import params, signals
from transfer.core.errors import StageError
from transfer.core.files import disk_full_error, is_disk_full


def run(main: Callable[[], object]) -> None:
    """Run a stage's CLI entry point, turning StageError and Ctrl-C into a message and a non-zero exit.

    A stage that read params.yaml fails at the end if the keys it read were edited meanwhile: DVC records
    params.yaml as it is after the command exits.
    """
    interrupted: list[int] = []
    try:
        with signals.ctrl_c_raises(interrupted):
            main()
        params.check_unchanged()
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except (OSError, RuntimeError) as error:
        if not is_disk_full(error):  # writers outside transfer/core/files.py's helpers: still one clear line
            raise
        filename = getattr(error, "filename", None)  # an OSError's
        folder = Path(filename).parent if filename else Path.cwd()
        kept = "the file it was writing may be incomplete, and rerunning the stage replaces it"
        print(f"error: {disk_full_error(error, folder, kept=kept)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception:
        # KeyboardInterrupt can arrive changed when Ctrl-C lands inside C code (a SystemError from TensorFlow's
        # tracing): after Ctrl-C, whatever arrives is the interruption.
        if not interrupted:
            raise
        print("interrupted", file=sys.stderr)
        sys.exit(130)


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
