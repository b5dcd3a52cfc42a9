"""The command-line tail every stage shares: parse its paths, run it, turn user errors into one line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from transfer import params
from transfer.errors import StageError
from transfer.files import disk_full_error, is_disk_full


def run(main: Callable[[], object]) -> None:
    """Run a stage's CLI entry point, turning StageError and Ctrl-C into a message and a non-zero exit.

    A stage that read params.yaml fails at the end if the keys it read were edited meanwhile: DVC records
    params.yaml as it is after the command exits.
    """
    try:
        main()
        params.check_unchanged()
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except (OSError, RuntimeError) as error:
        if not is_disk_full(error):  # writers outside transfer/files.py's helpers: still one clear line
            raise
        folder = Path(error.filename).parent if getattr(error, "filename", None) else Path.cwd()
        kept = "the file it was writing may be incomplete, and rerunning the stage replaces it"
        print(f"error: {disk_full_error(error, folder, kept=kept)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
