"""The study folder's ledger of who trains what: run locks and recorded run states (shared by the local and the
Slurm launchers, read by ``--status``).

- ``locks/<run>.lock``: held (``flock``) while a run trains, with its holder (Slurm job id, host, pid) written
  inside: a run never trains twice at once. The lock goes with its process, so a killed or preempted task leaves
  no stale lock.
- ``state/<run>.json``: the run's last recorded state (``queued`` with the Slurm job id, ``running``, ``finished``,
  ``failed`` with the exit code) and its log.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCKS, STATES = "locks", "state"


def write_json(path: Path, data: dict) -> None:
    """Atomically replace ``path`` with ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


class RunLocked(RuntimeError):
    """The run is being trained by another process (named in the message)."""


def owner() -> str:
    """Who this process is, for a lock: the Slurm job (array task) if any, the host and the pid."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ.get("SLURM_JOB_ID")
    return (f"slurm job {job} " if job else "") + f"on {socket.gethostname()} (pid {os.getpid()})"


@contextmanager
def run_lock(study_dir: Path, name: str) -> Iterator[None]:
    """Hold run ``name``'s lock while inside; :class:`RunLocked` (naming the holder) if another process holds it."""
    path = study_dir / LOCKS / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunLocked(f"{name} is being trained by {f.read().strip() or 'another process'}") from None
        f.seek(0)
        f.truncate()
        f.write(owner())
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_holder(study_dir: Path, name: str) -> str | None:
    """Who trains run ``name`` now (the lock's text), or None when nobody does."""
    path = study_dir / LOCKS / f"{name}.lock"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "another process"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def record_state(study_dir: Path, name: str, state: str, **details) -> None:
    """Write run ``name``'s ``state/<name>.json``: its state, the time and ``details`` (job, exit code, log)."""
    write_json(study_dir / STATES / f"{name}.json", {"state": state, "time": time.time(), **details})


def read_state(study_dir: Path, name: str) -> dict:
    """The last recorded state of run ``name`` (empty when none)."""
    path = study_dir / STATES / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
