"""A run stopped from outside: SIGTERM (`ray job stop` sends it, its SIGKILL follows in seconds)
cancels the run as Ctrl-C does, by raising KeyboardInterrupt in the driver's main thread."""

from __future__ import annotations

import contextlib
import signal
from typing import Callable, Iterator


def _raise_cancel(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def sigterm_cancels() -> Iterator[Callable[[], None]]:
    """While open, SIGTERM raises KeyboardInterrupt; the handler before it comes back on exit.

    Yields a function that puts the handler in again, for after code that installs its own
    (ray.init's calls sys.exit)."""
    def rearm() -> None:
        signal.signal(signal.SIGTERM, _raise_cancel)

    previous = signal.signal(signal.SIGTERM, _raise_cancel)
    try:
        yield rearm
    finally:
        signal.signal(signal.SIGTERM, previous)
