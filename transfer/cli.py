"""The command-line tail every stage shares: parse its paths, run it, turn user errors into one line."""

from __future__ import annotations

import sys
from collections.abc import Callable

from transfer import params
from transfer.errors import StageError


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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
