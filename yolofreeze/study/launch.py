"""Where a study's runs train: ``local`` (this machine; :func:`yolofreeze.study.runner.run_study`) or ``slurm``
(every unfinished run as one task of a Slurm job array, submitted through submitit: the ``slurm`` extra).

Each run, however launched, is :func:`~yolofreeze.study.runner.run_one`: the same ``train.py`` command in the same
run folder, so skip / resume / report behave alike. What the launchers share, in the study folder:

- the ledger (:mod:`.ledger`): a lock per run while it trains (a run never trains twice at once) and its last
  recorded state; :func:`run_states` reads them for ``--status``;
- ``plan.json``: the study's runs and common flags, so ``--status`` can redraw the report.

On Slurm a task stopped by preemption or its time limit is requeued by submitit (its checkpoint hook) and resumes
from the run's ``last.pt``; Slurm's SIGTERM reaches ``train.py``, which stops at a step boundary.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .ledger import lock_holder, read_state, record_state, write_json
from .runner import StudyRun, run_one, run_status

PLAN = "plan.json"
SLURM_EXTRA = "pip install -e .[slurm]  (or: pip install submitit)"


def write_plan(study_dir: Path, runs: Sequence[StudyRun], common: Sequence[str], cam: int, calib: int | None) -> None:
    """``plan.json``: what ``--status`` needs to redraw the report."""
    write_json(study_dir / PLAN, {"runs": [asdict(r) for r in runs], "common": list(common), "cam": cam,
                                   "calib": calib})


def read_plan(study_dir: Path) -> tuple[list[StudyRun], list[str], int, int | None]:
    """``plan.json`` back: runs, common flags, ``cam``, ``calib``; FileNotFoundError when it is not a study."""
    path = study_dir / PLAN
    if not path.is_file():
        raise FileNotFoundError(f"{study_dir} is not a study folder: no {PLAN} (written when a study starts)")
    plan = json.loads(path.read_text(encoding="utf-8"))
    return [StudyRun(**r) for r in plan["runs"]], plan["common"], plan["cam"], plan["calib"]


@dataclass(frozen=True)
class RunState:
    """One row of ``--status``."""

    name: str
    state: str  # finished, running, failed, queued, stopped, not started
    detail: str


def run_states(study_dir: Path, runs: Sequence[StudyRun]) -> list[RunState]:
    """Each run's state: ``finished`` (``summary.json``), ``running`` (its lock is held: by whom), ``failed``
    (exit code, log), ``queued`` (submitted to Slurm, not started: the job id), ``stopped`` (started, no longer
    running, not finished: it resumes from ``last.pt`` when the study is launched again) or ``not started``."""
    states = []
    for run in runs:
        status, record = run_status(study_dir / run.name), read_state(study_dir, run.name)
        holder = lock_holder(study_dir, run.name)
        log = study_dir / "logs" / f"{run.name}.log"
        if status == "finished":
            state = RunState(run.name, "finished", "")
        elif holder:
            state = RunState(run.name, "running", holder)
        elif record.get("state") == "failed":
            state = RunState(run.name, "failed", f"exit {record.get('exit_code')}; log {log}")
        elif record.get("state") == "queued":
            state = RunState(run.name, "queued", f"slurm job {record.get('job')}")
        elif status == "resume" or record.get("state") == "running":
            state = RunState(run.name, "stopped", "resumes from last.pt when the study is launched again"
                             if status == "resume" else "no epoch finished; starts over when launched again")
        else:
            state = RunState(run.name, "not started", "")
        states.append(state)
    return states


def format_states(states: Sequence[RunState]) -> str:
    """The ``--status`` table, then a count per state."""
    width = max(len(s.name) for s in states)
    lines = [f"{s.name:<{width}}  {s.state:<11}  {s.detail}".rstrip() for s in states]
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    return "\n".join(lines + [", ".join(f"{n} {state}" for state, n in counts.items())])


@dataclass(frozen=True)
class SlurmOptions:
    """What each array task asks Slurm for."""

    partition: str | None = None
    gpus_per_run: int = 1
    cpus_per_run: int | None = None
    timeout_min: int = 1440
    array_parallelism: int = 256


def require_submitit():
    """The submitit module, or ValueError (one line) naming the extra."""
    try:
        import submitit
    except ImportError:
        raise ValueError(f"--launcher slurm needs submitit, which is not installed: {SLURM_EXTRA}") from None
    return submitit


def check_slurm() -> None:
    """Refuse before anything is submitted when this machine cannot submit to Slurm (no ``sbatch`` / ``srun``)."""
    require_submitit()
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise ValueError(f"--launcher slurm: {' and '.join(missing)} not on the PATH (run the study from a Slurm "
                         f"login node, or use --launcher local)")


class RunTask:
    """One study run as a submitit task (picklable; a ``Checkpointable``: when Slurm preempts the task or its time
    runs out, submitit requeues the same call, which resumes the run from ``last.pt``)."""

    def __call__(self, run: StudyRun, study_dir: str, common: Sequence[str], gpus: int) -> int:
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if gpus else []
        devices = [d for d in devices if d][:gpus] or [str(k) for k in range(gpus)]
        _, code, _ = run_one(run, Path(study_dir), common, devices)
        return code

    def checkpoint(self, *args, **kwargs):
        """submitit's hook before a preemption or timeout: requeue this very call."""
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self, *args, **kwargs)


def make_executor(study_dir: Path, options: SlurmOptions, cluster: str | None = "slurm"):
    """A submitit executor for the study's tasks (``cluster="local"``: submitit's local executor, real
    subprocesses on this machine, for tests)."""
    submitit = require_submitit()
    executor = submitit.AutoExecutor(folder=study_dir / "slurm" / "%j", cluster=cluster)
    parameters = {"name": f"yolofreeze-{study_dir.name}", "timeout_min": options.timeout_min,
                  "slurm_array_parallelism": options.array_parallelism, "tasks_per_node": 1, "nodes": 1}
    if options.gpus_per_run:
        parameters["gpus_per_node"] = options.gpus_per_run
    if options.partition:
        parameters["slurm_partition"] = options.partition
    if options.cpus_per_run:
        parameters["cpus_per_task"] = options.cpus_per_run
    executor.update_parameters(**parameters)
    return executor


def submit_runs(runs: Sequence[StudyRun], study_dir: Path, common: Sequence[str], options: SlurmOptions,
                cluster: str | None = "slurm") -> list:
    """Submit every run not finished and not running as one job array; record each as ``queued`` with its job
    id; return the submitit jobs (empty when nothing is left to train)."""
    pending = [r for r in runs if run_status(study_dir / r.name) != "finished" and not lock_holder(study_dir, r.name)]
    if not pending:
        return []
    executor = make_executor(study_dir, options, cluster)
    task = RunTask()
    with executor.batch():
        jobs = [executor.submit(task, run, str(study_dir), list(common), options.gpus_per_run) for run in pending]
    for run, job in zip(pending, jobs):
        record_state(study_dir, run.name, "queued", job=job.job_id, log=str(study_dir / "logs" / f"{run.name}.log"))
    return jobs
