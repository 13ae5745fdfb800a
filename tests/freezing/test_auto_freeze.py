"""``--freeze auto`` in real training on demo data: the decided blocks lose ``requires_grad`` at the decided epoch and
leave the optimiser with their state, their bytes never change again (digests), the frozen set only grows; the
decision timeline in ``freeze_audit.json``, ``results.csv``, ``memory.json`` and ``summary.json``; a run killed
after its freeze resumes to the same decisions and weights; the frozen-prefix cache changes no training loss; two
DDP processes take the same decisions; bad combinations are refused with one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from yolofreeze import build_model
from yolofreeze.data import read_dataset, write_demo_dataset
from yolofreeze.freezing.cache import FeatureCache
from yolofreeze.freezing.plan import FreezePlan, block_of
from yolofreeze.training.runs import read_results

from auto_freeze_probe import AUTO, CONFIG  # beside this file (rootdir-relative imports)
from watched_trainer import Watched, assert_same_run, killed_then_resumed

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "freezing" / "auto_freeze_probe.py"
EPOCHS = 4
WITH_WEIGHTS = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 18, 19, 21, 22}  # yolov8 blocks that have parameters
FROZEN = {0, 1, 2, 3}  # the ceiling (fr1), reached by the decision after epoch 2


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("datasets") / "demo", n_train=16, n_val=4, size=64)


def make_trainer(data_yaml: Path, run_dir: Path, stop_after=None, cache=None) -> Watched:
    torch.manual_seed(0)
    data = read_dataset(data_yaml, "yolo")
    model = build_model("yolov8n", names=data.names)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = CONFIG.__class__(**{**CONFIG.to_dict(), "epochs": EPOCHS})
    trainer = Watched(model, data, cfg, run_dir, FreezePlan.build("auto", model, auto=AUTO), workers=0,
                      progress=False, cache_frozen=cache)
    trainer.stop_after = stop_after
    return trainer


@pytest.fixture(scope="module")
def uninterrupted(data_yaml, tmp_path_factory):
    trainer = make_trainer(data_yaml, tmp_path_factory.mktemp("runs") / "full")
    trainer.fit()
    return trainer


def test_the_decided_blocks_freeze_at_the_decided_epoch_and_leave_the_optimiser(uninterrupted):
    seen = uninterrupted.seen
    for epoch, trainable in {1: WITH_WEIGHTS, 2: WITH_WEIGHTS, 3: WITH_WEIGHTS - FROZEN, 4: WITH_WEIGHTS - FROZEN}.items():
        assert seen[epoch]["requires_grad"] == seen[epoch]["in_optimizer"] == trainable, epoch
        assert seen[epoch]["moved"] == trainable, epoch
    assert seen[3]["with_state"] == WITH_WEIGHTS - FROZEN  # the frozen blocks' momentum left with them
    frozen_over_time = [WITH_WEIGHTS - seen[e]["requires_grad"] for e in sorted(seen)]
    assert all(a <= b for a, b in zip(frozen_over_time, frozen_over_time[1:]))  # the frozen set only grows


def test_the_decision_timeline_is_in_the_audit_with_its_evidence(uninterrupted):
    audit = json.loads(uninterrupted.audit_path.read_text())
    assert audit["auto"] == {"ceiling": 4, "interval": 1, "unit": "epoch", "threshold": 1e6, "min_intervals": 2,
                             "warmup": "skip"}
    decisions = audit["decisions"]
    assert [(d["epoch"], d["step"], d["prefix_before"], d["prefix_after"]) for d in decisions] == [
        (1, 4, 0, 0), (2, 8, 0, 4), (3, 12, 4, 4)]  # none after the last epoch
    assert "1 of 2 intervals" in decisions[0]["reason"] and "ceiling" in decisions[2]["reason"]
    evidence = decisions[1]["evidence"]
    assert [e["block"] for e in evidence] == [0, 1, 2, 3]
    for row in evidence:
        previous, current = row["measures"]
        assert previous > 0 and current > 0 and row["r"] == pytest.approx(abs(previous - current) / previous)
    phases = audit["integrity"]["phases"]
    assert [(p["first_epoch"], p["frozen_blocks"], p["verified_after_epochs"]) for p in phases] == [
        (1, [], [1, 2]), (3, [0, 1, 2, 3], [3, 4])]
    assert {block_of(name) for name in phases[1]["digests"]} == FROZEN


def test_results_memory_and_summary_say_when_blocks_froze(uninterrupted):
    results = read_results(uninterrupted.run_dir / "results.csv")
    assert results["frozen_blocks"] == [0, 0, 4, 4]
    memory = json.loads((uninterrupted.run_dir / "memory.json").read_text())
    assert [(p["first_epoch"], p["frozen_blocks"]) for p in memory["phases"]] == [(1, []), (3, [0, 1, 2, 3])]
    assert memory["phases"][1]["gradients_bytes"] < memory["phases"][0]["gradients_bytes"]
    summary = json.loads((uninterrupted.run_dir / "summary.json").read_text())
    assert [(f["epoch"], f["prefix_after"]) for f in summary["freezes"]] == [(2, 4)]


@pytest.mark.parametrize("stop_after", [2, 3])
def test_a_run_killed_after_its_freeze_resumes_to_the_same_decisions_and_weights(stop_after, data_yaml,
                                                                                 uninterrupted, tmp_path):
    resumed = killed_then_resumed(partial(make_trainer, data_yaml, tmp_path / "run"), stop_after)
    assert set(resumed.seen) == set(range(stop_after + 1, EPOCHS + 1))
    assert_same_run(resumed, uninterrupted)
    audit, reference = (json.loads(t.audit_path.read_text()) for t in (resumed, uninterrupted))
    assert [(d["epoch"], d["prefix_after"]) for d in audit["decisions"]] == [
        (d["epoch"], d["prefix_after"]) for d in reference["decisions"]]
    for ours_d, theirs_d in zip(audit["decisions"], reference["decisions"], strict=True):
        for a, b in zip(ours_d["evidence"], theirs_d["evidence"], strict=True):
            assert a["measures"] == pytest.approx(b["measures"], rel=1e-5)


def test_with_the_cache_the_epochs_after_a_freeze_run_from_the_cache_with_the_same_losses(data_yaml, uninterrupted,
                                                                                         tmp_path):
    built = []
    build = FeatureCache._build

    def counting(self, model, positions):
        built.append((self.start, len(positions)))
        return build(self, model, positions)

    FeatureCache._build = counting
    try:
        cached = make_trainer(data_yaml, tmp_path / "cached", cache="ram")
        cached.fit()
    finally:
        FeatureCache._build = build
    assert built == [(4, 16), (4, 4)]  # built once, at the freeze, for the train and val images
    assert cached.from_cache == {3, 4}
    plain, ours = torch.stack(uninterrupted.losses), torch.stack(cached.losses)
    assert plain.shape == ours.shape == (EPOCHS * uninterrupted.nb, 3)
    assert ((ours - plain).abs().max() / plain.abs().max()).item() <= 1e-5
    assert json.loads(cached.audit_path.read_text())["decisions"][1]["prefix_after"] == 4


def test_two_ddp_processes_take_the_same_decisions(data_yaml, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(PROBE), str(tmp_path), str(data_yaml)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"auto_{r}.json").read_text()) for r in (0, 1))
    assert rank0["phases"] == rank1["phases"] == [[0, []], [2, [0, 1, 2, 3]]]
    assert rank0["trainable"] == rank1["trainable"]
    assert set(rank0["trainable"]["3"]) == WITH_WEIGHTS - FROZEN
    assert rank0["weights"] == rank1["weights"]
    decisions = json.loads((tmp_path / "run" / "freeze_audit.json").read_text())["decisions"]
    assert [(d["epoch"], d["prefix_after"]) for d in decisions] == [(1, 0), (2, 4)]


@pytest.mark.parametrize("flags, message", [
    (["--freeze", "auto", "--unfreeze", "2:fr1"], "--freeze auto decides when blocks freeze; leave out --unfreeze"),
    (["--freeze", "auto", "--auto-max", "23"], "--auto-max 23: yolov8n's blocks are 0-22 and 22 is the detection head"),
    (["--freeze", "auto", "--frozen-bn", "train", "--cache-frozen", "ram"], "--frozen-bn train"),
    (["--freeze", "fr1", "--auto-max", "fr2"], "--auto-max applies with --freeze auto"),
    (["--freeze", "auto", "--auto-interval", "0"], "--auto-interval 0"),
])
def test_bad_combinations_are_refused_with_one_line(flags, message, data_yaml, tmp_path):
    done = subprocess.run([sys.executable, "-m", "yolofreeze.train", "--data", str(data_yaml), "--weights", "none",
                           "--epochs", "3", "--imgsz", "64", "--project", str(tmp_path), *flags],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "YOLO_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())  # a refused run leaves no run folder
