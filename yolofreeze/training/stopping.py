"""Stopping a run cleanly: SIGTERM (what Slurm and other schedulers send before a kill) and Ctrl-C (SIGINT).

The first signal asks the training loop to stop at the next step boundary (:attr:`StopSignals.requested`; the
trainer then raises :class:`TrainingInterrupted` naming the epoch ``last.pt`` holds); a second one stops at once
(:class:`TrainingInterrupted` raised from the signal handler). Handlers are installed only in the main thread of
the main interpreter and restored on exit, so a library caller's own handlers come back (SIGCHLD's, which the first
signal resets, is not restored: the process is stopping).
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

LOGGER = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(BaseException):
    """A run stopped by a signal; ``exit_code`` is the shell's ``128 + signal number`` (130 Ctrl-C, 143 SIGTERM).
    A ``BaseException``, as ``KeyboardInterrupt``: raised from a signal handler into whatever code was running, it
    must not be swallowed by that code's ``except Exception``."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def _ignore(signum: int, frame) -> None:
    """A Python-level handler that does nothing (``SIG_DFL`` set while a signal is pending makes CPython print
    a "race condition" error)."""


class StopSignals:
    """Context manager: while inside, SIGTERM and SIGINT request a stop (``requested``, ``signum``) instead of
    killing the process; the second one raises :class:`TrainingInterrupted` at once, its message ending with
    ``hint()`` (what is saved and how to resume)."""

    def __init__(self, hint: Callable[[], str] = str) -> None:
        self.hint = hint
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signum is not None

    @property
    def name(self) -> str:
        """The signal's name (``SIGTERM``), or an empty string."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise TrainingInterrupted(f"a second signal ({signal.Signals(signum).name}): stopped at once; "
                                      f"{self.hint()}", signum)
        self.signum = signum
        # data-loader workers get a scheduler's SIGTERM too and die of it: from now on that is this stop, not a
        # failure for PyTorch's SIGCHLD handler to raise at some later point (even at exit); the loader still
        # notices a dead worker when it next waits for a batch (the trainer then reports the same stop)
        signal.signal(signal.SIGCHLD, _ignore)
        LOGGER.warning("%s: stopping after this step (send it again to stop at once)", self.name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
