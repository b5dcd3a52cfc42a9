"""Ctrl-C and termination signals, held back while TensorFlow's C++ code runs.

A signal handler raises its exception (KeyboardInterrupt, workers.Terminated) wherever Python happens to be. Inside
TensorFlow's C++ code (tracing a tf.function, running a batch) the exception is printed there as a traceback
("SystemError: <built-in function __import__> returned a result with an exception set"), seen about once in ten
Ctrl-Cs during feature extraction. Code that calls into the backend runs inside `deferred()`: a signal arriving
then is raised when the block ends, a batch later at most, where Python cleans up and says one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

_depth = 0
_pending: list[BaseException] = []


def raise_or_defer(make: Callable[[], BaseException]) -> None:
    """For a signal handler: raise make()'s exception now, or at the end of the running deferred() block."""
    if _depth:
        _pending.append(make())
        return
    raise make()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    if not _depth and _pending:
        error = _pending[0]
        _pending.clear()
        raise error
