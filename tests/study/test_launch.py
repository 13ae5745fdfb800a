"""Studies beyond one machine: run locks, recorded states and ``--status``; submission through submitit, checked with
its local executor (real subprocesses: a task killed mid-run and resubmitted) and, for the Slurm command line, with a
stand-in ``sbatch`` that records what it was given."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from yolofreeze.data import DEMO_NAMES, write_demo_dataset
from yolofreeze.study.__main__ import main as study_main
from yolofreeze.study.launch import SlurmOptions, read_plan, run_states, submit_runs, write_plan
from yolofreeze.study.ledger import RunLocked, lock_holder, read_state, run_lock
from yolofreeze.study.runner import plan_study
from yolofreeze.weights.checkpoints import random_model, save_checkpoint

TINY = ["--imgsz", "64", "--batch", "8", "--workers", "0", "--grad-norms", "off", "--no-tensorboard"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A 16 + 8 image demo dataset at 64 px and a random 'pretrained' yolov8n with its classes."""
    root = tmp_path_factory.mktemp("launch")
    data = write_demo_dataset(root / "tiny", n_train=16, n_val=8, size=64)
    return data, save_checkpoint(random_model("yolov8n", names=list(DEMO_NAMES), seed=1), root / "start.pt")


def test_a_run_lock_is_exclusive_names_its_holder_and_goes_with_its_holder(tmp_path):
    assert lock_holder(tmp_path, "a") is None
    with run_lock(tmp_path, "a"):
        holder = lock_holder(tmp_path, "a")
        assert holder and f"pid {os.getpid()}" in holder
        with pytest.raises(RunLocked, match=f"a is being trained by .*pid {os.getpid()}"):
            with run_lock(tmp_path, "a"):
                pass
        with run_lock(tmp_path, "b"):  # other runs are free
            pass
    assert lock_holder(tmp_path, "a") is None


def _fake_slurm(folder: Path, monkeypatch) -> Path:
    """``sbatch`` and ``srun`` stand-ins on the PATH; sbatch records its arguments and script; the log's path."""
    folder.mkdir()
    log = folder / "sbatch.log"
    (folder / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {log}\ncat "$1" >> {log}\necho "Submitted batch job 4242"\n')
    (folder / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (folder / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return log


def test_slurm_submits_one_job_array_with_the_asked_resources_and_status_says_queued(tiny, tmp_path, monkeypatch,
                                                                                      capsys):
    data, weights = tiny
    log = _fake_slurm(tmp_path / "bin", monkeypatch)
    argv = ["--data", str(data), "--strategies", "scratch,none,fr2", "--weights", str(weights), "--epochs", "1",
            "--project", str(tmp_path / "runs"), "--name", "s", "--launcher", "slurm", "--slurm-partition", "gpu",
            "--gpus-per-run", "2", "--timeout-min", "600", "--slurm-array-parallelism", "2", "--cpus-per-run", "8",
            *TINY]
    assert study_main(argv) == 0
    assert "submitted 3 runs as Slurm job array 4242" in capsys.readouterr().out
    script = log.read_text()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --time=600", "#SBATCH --cpus-per-task=8", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --signal=USR2@90"):  # the signal submitit's requeue hook waits for
        assert line in script, line
    study = tmp_path / "runs" / "s"
    assert [read_state(study, n)["job"] for n in ("tiny-yolov8n-scratch", "tiny-yolov8n-none", "tiny-yolov8n-fr2")] \
        == ["4242_0", "4242_1", "4242_2"]
    assert study_main(["--status", str(study)]) == 0
    out = capsys.readouterr().out
    assert "tiny-yolov8n-none     queued       slurm job 4242_1" in out and "3 queued" in out
    assert "0 of 3 runs finished; 3 still missing" in out
    assert "3 of 3 runs are still missing" in (study / "study.md").read_text()


def test_without_sbatch_a_slurm_study_is_refused_in_one_line(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    assert study_main(["--data", str(tiny[0]), "--launcher", "slurm", "--project", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --launcher slurm: sbatch and srun not on the PATH (run the study from a Slurm login node, "
                   "or use --launcher local)\n")
    assert not (tmp_path / "runs").exists()


def _wait(condition, timeout: float = 300.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_submitit_tasks_train_a_killed_one_resumes_when_resubmitted_and_the_report_completes(tiny, tmp_path,
                                                                                             capsys):
    data, weights = tiny
    study = tmp_path / "study"
    runs = plan_study(["yolov8n"], [str(data)], ["scratch", "fr2"], {"yolov8n": str(weights)})
    common = ["--epochs", "3", *TINY]
    study.mkdir()
    write_plan(study, runs, common, 0, None)
    options = SlurmOptions(gpus_per_run=0, timeout_min=30)
    jobs = submit_runs(runs, study, common, options, cluster="local")
    victim = study / runs[1].name / "weights" / "last.pt"
    _wait(victim.is_file, what="the fr2 run's first epoch")
    jobs[1].cancel()  # SIGINT to the task: its train.py child is killed mid-run
    for job in jobs:
        _wait(job.done, what=f"job {job.job_id}")
    states = {s.name: s.state for s in run_states(study, runs)}
    assert states == {runs[0].name: "finished", runs[1].name: "stopped"}
    assert submit_runs(runs, study, common, options, cluster="local")[0].result() == 0  # only the stopped one
    log = (study / "logs" / f"{runs[1].name}.log").read_text()
    assert "--resume" in log and "resuming" in log  # the second task continued from last.pt
    assert study_main(["--status", str(study)]) == 0
    out = capsys.readouterr().out
    assert "2 finished" in out and "(2 of 2 runs finished)" in out
    assert "still missing" not in (study / "study.md").read_text()
    assert read_plan(study)[0] == runs
