"""The study runner: the plan for every strategy on v8 and v10, a dry run, a tiny real study that is killed mid-run,
resumed, reported (csv, md, plots) and skipped when asked again, bad input, and the failure diagnostics on crafted
rows."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from yolofreeze import build_model
from yolofreeze.weights.checkpoints import random_model, save_checkpoint
from yolofreeze.weights.releases import sha256_of
from yolofreeze.data import DEMO_NAMES, write_demo_dataset
from yolofreeze.freezing.plan import FreezePlan
from yolofreeze.study.report import diagnose, quantisation_verdict
from yolofreeze.study.__main__ import main as study_main
from yolofreeze.study.runner import plan_study

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
TINY = ["--imgsz", "64", "--batch", "8", "--workers", "0"]
# Facts of the architectures: frozen blocks per strategy.
EXPECTED = {"yolov8n": {"scratch": set(), "none": set(), "fr1": set(range(4)), "fr2": set(range(9)),
                        "fr3": set(range(22)), "backbone": set(range(10))},
            "yolov10n": {"scratch": set(), "none": set(), "fr1": set(range(4)), "fr2": set(range(9)),
                         "fr3": set(range(23)), "backbone": set(range(11))}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A 16 + 8 image demo dataset at 64 px and a (random) 'pretrained' yolov8n checkpoint with its classes."""
    root = tmp_path_factory.mktemp("study")
    data = write_demo_dataset(root / "tiny", n_train=16, n_val=8, size=64)
    weights = save_checkpoint(random_model("yolov8n", names=list(DEMO_NAMES), seed=1), root / "start.pt")
    return data, weights


@pytest.mark.parametrize("model", ["yolov8n", "yolov10n"])
def test_plan_covers_every_strategy_with_its_freeze_and_start(model):
    strategies = list(EXPECTED[model])
    runs = plan_study([model], ["insplad"], strategies, {model: "pre.pt"})
    assert [r.name for r in runs] == [f"insplad-{model}-{s}" for s in strategies]
    net = build_model(model, nc=3)
    for run in runs:
        args = run.train_args(Path("runs/study/x"), ["--epochs", "3"])
        assert args[args.index("--weights") + 1] == ("none" if run.strategy == "scratch" else "pre.pt")
        assert args[args.index("--name") + 1] == run.name and "--epochs" in args
        assert FreezePlan.parse(args[args.index("--freeze") + 1], net).frozen == EXPECTED[model][run.strategy]
        cached = run.train_args(Path("s"), ["--cache-frozen", "ram", "--cache-dtype", "fp16", "--imgsz", "320"])
        nothing_frozen = not EXPECTED[model][run.strategy]
        assert ("--cache-frozen" in cached) != nothing_frozen and ("fp16" in cached) != nothing_frozen
        assert "320" in cached
        joined = run.train_args(Path("s"), ["--cache-frozen=disk", "--cache-dtype=fp16", "--imgsz=320"])
        assert ("--cache-frozen=disk" in joined) != nothing_frozen and "--imgsz=320" in joined


def test_dry_run_prints_the_plan_audits_and_memory(tiny, tmp_path, capsys):
    data, weights = tiny
    assert study_main(["--data", str(data), "--strategies", "scratch,fr2", "--weights", str(weights), "--dry-run",
                       "--project", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    assert "tiny-yolov8n-scratch" in out and "tiny-yolov8n-fr2" in out and out.count(" new") == 2
    assert out.count("memory of one training step") == 2 and out.count("saved activations") == 2
    assert "1,108,048 of 3,011,433 parameters frozen" in out  # yolov8n fr2 (3 classes), from the audit
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


@pytest.mark.parametrize("argv, message", [
    (["--strategies", "fr9"], "--strategies 'fr9'"),
    (["--strategies", "fr2,fr2"], "names an entry twice"),
    (["--freeze", "3"], "--freeze is set by the study"),
    (["--freeze=3"], "--freeze is set by the study"),
    (["--imgsz", "100"], "not a positive multiple of 32"),
    (["--models", "yolov8n,yolov10n", "--weights", "a.pt"], "give MODEL=PATH for each"),
    (["--data", "/no/such/data"], "dataset '/no/such/data' not found"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tiny, tmp_path, capsys):
    data = [] if "--data" in argv else ["--data", str(tiny[0])]
    assert study_main([*data, *argv, "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("weights, message", [
    (None, "the start weights of tiny-yolov8n-fr2 and 1 other runs cannot be had: could not download "
           "http://127.0.0.1:9/yolov8n.pt"),
    ("/no/such/start.pt", "the start weights of tiny-yolov8n-fr2 and 1 other runs, /no/such/start.pt, do not exist")])
def test_start_weights_that_cannot_be_had_stop_the_study_before_any_run(weights, message, tiny, tmp_path,
                                                                       monkeypatch, capsys):
    monkeypatch.setenv("YOLOFREEZE_WEIGHTS", str(tmp_path / "empty-cache"))  # offline, nothing cached
    monkeypatch.setenv("YOLOFREEZE_WEIGHTS_URL", "http://127.0.0.1:9")  # nothing listens there
    given = ["--weights", weights] if weights else []
    assert study_main(["--data", str(tiny[0]), "--strategies", "scratch,fr2,none", *given, "--project",
                       str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # no study folder, no run started


def _study(tiny, cwd: Path) -> list[str]:
    data, weights = tiny
    return [sys.executable, "-m", "yolofreeze.study", "--data", str(data), "--strategies", "scratch,fr2",
            "--weights", str(weights), "--epochs", "2", "--name", "s", *TINY]


def test_a_killed_study_resumes_reports_and_then_skips(tiny, tmp_path):
    argv = _study(tiny, tmp_path)
    study = tmp_path / "runs" / "study" / "s"
    first_last = study / "tiny-yolov8n-scratch" / "weights" / "last.pt"
    process = subprocess.Popen(argv, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    while not first_last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the study and its train.py child
    process.wait()
    assert first_last.exists() and not (study / "tiny-yolov8n-scratch" / "summary.json").exists()

    again = subprocess.run(argv, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "tiny-yolov8n-scratch: resumed and finished" in again.stdout
    assert "tiny-yolov8n-fr2: finished" in again.stdout
    for name in ("study.csv", "study.md", "study_tiny_yolov8n.png", "study_tiny_yolov8n_blocks.png"):
        assert (study / name).is_file() and (study / name).stat().st_size > 0, name
    with open(study / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["strategy"] for r in rows] == ["scratch", "fr2"] and all(r["status"] == "finished" for r in rows)
    fr2 = rows[1]
    assert fr2["frozen_blocks"] == "0-8" and int(fr2["trainable_params"]) < int(rows[0]["trainable_params"])
    assert float(fr2["peak_memory_mb"]) < float(rows[0]["peak_memory_mb"])  # scratch freezes nothing
    numeric = ("map50", "grad_norm_mean", "grad_norm_cv_epochs", "epoch_seconds")
    assert all(math.isfinite(float(r[c])) for r in rows for c in numeric)
    assert {f"ap50/{name}" for name in DEMO_NAMES} <= set(rows[0])
    md = (study / "study.md").read_text()
    assert "## tiny · yolov8n" in md and "| fr2 | 0-8 |" in md
    summaries = {p: p.stat().st_mtime_ns for p in study.glob("*/summary.json")}
    assert len(summaries) == 2

    third = subprocess.run(argv + ["--cam", "2", "--export", "int8", "--calib", "4"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and third.stdout.count("already finished, skipped") == 2
    assert {p: p.stat().st_mtime_ns for p in study.glob("*/summary.json")} == summaries
    # --cam 2: each run's best.pt explains its top detection on the same 2 val images; figure and column
    assert (study / "cams_tiny_yolov8n.png").stat().st_size > 10_000
    with open(study / "study.csv", newline="") as f:
        energies = [float(r["cam_energy_in_gt"]) for r in csv.DictReader(f)]
    assert len(energies) == 2 and all(0 <= e <= 1 for e in energies)
    assert "CAM mass in ground truth" in (study / "study.md").read_text()
    # --export int8: each run's best.pt as float32 and INT8 ONNX, measured, kept in export.json, in the report
    with open(study / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        run = study / f"tiny-yolov8n-{row['strategy']}"
        assert (run / "weights" / "best.onnx").is_file() and (run / "weights" / "best.int8.onnx").is_file()
        measured = json.loads((run / "export.json").read_text())
        assert measured["source_sha256"] == sha256_of(run / "weights" / "best.pt") and measured["calib"] == 4
        assert float(row["int8_mb"]) < 0.5 * float(row["fp32_mb"]) and float(row["int8_ms_1"]) > 0
        assert math.isclose(float(row["int8_drop"]), float(row["fp32_map50_95"]) - float(row["int8_map50_95"]),
                            abs_tol=1e-5)
    md = (study / "study.md").read_text()
    assert "| fp32 mAP50-95 | INT8 mAP50 |" in md and "Quantisation: INT8 loses" not in md  # no none run here
    assert "Quantisation: no INT8 result of fine-tuning (none)" in md


def _export_row(strategy: str, seed: int, drop: float) -> dict:
    return {"strategy": strategy, "seed": seed, "int8_drop": drop}


@pytest.mark.parametrize("drops, verdict", [
    ({"fr1": (0.001, 0.002, 0.003), "fr2": (0.002, 0.003, 0.001)}, "no frozen strategy quantises differently"),
    ({"fr1": (0.030, 0.031, 0.029), "fr2": (0.020, 0.022, 0.021)}, "the frozen strategies quantise worse"),
    ({"fr1": (-0.01, -0.011, -0.012)}, "the frozen strategies quantise better"),
    ({"fr1": (-0.01, -0.011, -0.012), "fr3": (0.05, 0.05, 0.05)}, "mixed: better fr1; worse fr3")])
def test_quantisation_verdict_weighs_drops_against_the_seeds_spread(drops, verdict):
    group = [_export_row("none", seed, drop) for seed, drop in enumerate((0.001, 0.002, 0.003))]  # 0.002 ± 0.001
    group += [_export_row("scratch", seed, 0.5) for seed in range(3)]  # not a frozen strategy: never compared
    group += [_export_row(s, seed, d) for s, values in drops.items() for seed, d in enumerate(values)]
    sentence = quantisation_verdict(group)
    assert sentence.startswith("Quantisation: INT8 loses +0.0020 mAP50-95") and verdict in sentence
    assert "scratch" not in sentence


def _row(strategy: str, map50: float, losses=(9.0, 6.0), grads=(10.0, 9.0, 8.0, 8.0, 7.0, 7.0, 6.0, 6.0, 5.0, 5.0)):
    return {"dataset": "d", "model": "m", "strategy": strategy, "map50": map50,
            "series": {"train_loss": list(losses), "grad_total": list(grads)}}


def test_diagnostics_fire_on_failure_signatures_and_stay_silent_on_healthy_runs():
    healthy = [_row("none", 0.60), _row("fr1", 0.61), _row("fr2", 0.58, grads=(7.0,) * 10), _row("scratch", 0.30)]
    assert all(flags == [] for flags in diagnose(healthy).values())

    flags = diagnose([_row("none", 0.40), _row("fr2", 0.55),
                      _row("fr3", 0.01, losses=(9.0, 5.0), grads=(2.0,) * 10)])
    assert len(flags[("d", "m", "none", "fr3", 0)]) == 2
    assert flags[("d", "m", "none", "fr3", 0)][0].startswith("capacity collapse: mAP50 0.010 while the training loss fell")
    assert flags[("d", "m", "none", "fr3", 0)][1] == ("gradient starvation: early gradient norm 0.20x fine-tuning's (first 1 "
                                              "steps)")
    assert flags[("d", "m", "none", "none", 0)] == ["forgetting: fine-tuning mAP50 0.400 below fr2's 0.550"]
    assert flags[("d", "m", "none", "fr2", 0)] == []
    # near zero mAP with a loss that did not fall is not collapse (nothing was learnt at all), and a small gap is
    # not forgetting
    quiet = diagnose([_row("none", 0.50), _row("fr2", 0.51), _row("fr3", 0.01, losses=(9.0, 8.5))])
    assert all(flags == [] for flags in quiet.values())


def test_study_demo_uses_the_generated_target_and_the_cached_source(tmp_path, monkeypatch, capsys):
    from yolofreeze.data import read_dataset
    from yolofreeze.study.demo import DEMO_EPOCHS, cache_dir, prepare_demo
    from yolofreeze.study.__main__ import parse_args
    monkeypatch.setenv("YOLOFREEZE_DATASETS", str(tmp_path / "cache"))
    source = cache_dir() / "source-yolov8n-v2.pt"  # as if pretrained earlier: no pretraining run now
    save_checkpoint(random_model("yolov8n", names=list(DEMO_NAMES)), source)
    args, passthrough = prepare_demo(*parse_args(["--demo", "--strategies", "none,fr2", "--imgsz", "128"]), print)
    assert args.strategies == "none,fr2"  # given strategies win; by default the demo runs auto too
    assert prepare_demo(*parse_args(["--demo"]))[0].strategies.split(",")[-1] == "auto"
    assert args.weights == str(source) and "cached" in capsys.readouterr().out
    assert args.epochs == DEMO_EPOCHS and args.patience == 0 and args.name == "demo"
    assert passthrough == ["--imgsz", "128", "--batch", "8"]  # the given --imgsz wins
    _, passthrough = prepare_demo(*parse_args(["--demo", "--imgsz=320", "--batch=4"]))
    assert passthrough == ["--imgsz=320", "--batch=4"]  # in the --flag=value form too, and nothing after it
    target = read_dataset(args.data, "yolo")
    assert target.names == ["ring", "cross", "diamond"] and len(target.splits["train"]) == 256
    assert not set(target.names) & set(DEMO_NAMES)  # other classes than the source domain's
    with pytest.raises(ValueError, match="leave out --data"):
        prepare_demo(*parse_args(["--demo", "--data", "insplad"]))


def test_devices_run_one_study_run_per_gpu_group_at_a_time(monkeypatch, tmp_path):
    import threading
    import yolofreeze.study.runner as study
    busy, lock, spans = set(), threading.Lock(), []

    def fake_run_one(run, study_dir, common, devices=(), python=sys.executable):
        group = tuple(devices)
        with lock:
            assert group not in busy, f"two runs on GPU {group} at once"
            busy.add(group)
            spans.append((group, len(busy)))
        time.sleep(0.2)
        with lock:
            busy.remove(group)
        return "new", 0, 0.2

    monkeypatch.setattr(study, "run_one", fake_run_one)
    runs = plan_study(["yolov8n"], ["d1", "d2"], ["none", "fr1", "fr2"])
    codes = study.run_study(runs, tmp_path, [], devices=["0", "1", "2", "3"], gpus_per_run=2)
    assert sorted(codes) == sorted(r.name for r in runs) and not any(codes.values())
    assert {group for group, _ in spans} == {("0", "1"), ("2", "3")}  # pairs of GPUs: torchrun jobs
    assert max(concurrent for _, concurrent in spans) == 2  # both groups busy at once


def test_an_installed_package_without_the_checkout_runs_a_tiny_study(tiny, tmp_path):
    """A wheel of the package (what pip installs without -e) unpacked away from the checkout: the study finds its
    model specs and launches its training runs from the package alone (python -m yolofreeze.train)."""
    data, weights = tiny
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(ROOT),
                    "--wheel-dir", str(tmp_path / "dist")], check=True, capture_output=True)
    site = tmp_path / "site"
    with zipfile.ZipFile(next((tmp_path / "dist").glob("yolofreeze-*.whl"))) as wheel:  # a pure-Python wheel
        wheel.extractall(site)
    assert not (site / "yolofreeze" / "specs").is_symlink() and (site / "yolofreeze" / "specs" / "yolov8.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "2"}
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([sys.executable, "-c", "import yolofreeze; print(yolofreeze.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site))
    done = subprocess.run([sys.executable, "-m", "yolofreeze.study", "--data", str(data), "--strategies", "fr2",
                           "--weights", str(weights), "--epochs", "1", "--name", "s", *TINY], cwd=work, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    study = work / "runs" / "study" / "s"
    assert (study / "study.csv").is_file() and (study / "tiny-yolov8n-fr2" / "summary.json").is_file()


def test_auto_is_a_strategy_and_only_its_run_gets_the_auto_flags():
    runs = plan_study(["yolov8n"], ["insplad"], ["none", "fr2", "auto"], {"yolov8n": "pre.pt"})
    common = ["--auto-threshold", "0.3", "--auto-max=fr2", "--cache-frozen", "ram", "--imgsz", "320"]
    args = {run.strategy: run.train_args(Path("s"), common) for run in runs}
    assert args["auto"][args["auto"].index("--freeze") + 1] == "auto"
    assert "--auto-threshold" in args["auto"] and "--auto-max=fr2" in args["auto"] and "ram" in args["auto"]
    for strategy in ("none", "fr2"):
        assert not any(token.startswith("--auto") for token in args[strategy]), strategy
        assert "0.3" not in args[strategy] and "320" in args[strategy]


def test_the_report_says_which_prefix_auto_ended_with_and_when(tmp_path):
    """A run folder as an auto run leaves it (audit with two freezes, results, norms): the row, study.md and the
    plot's freeze markers."""
    import json

    from yolofreeze.plots import plot_study
    from yolofreeze.study.report import collect_row, format_markdown

    model = build_model("yolov8n", nc=3)
    plan = FreezePlan.build("auto", model)
    audit = {**plan.audit(model), "integrity": {"phases": [
        {"first_epoch": 1, "frozen_blocks": [], "digests": {}, "verified_after_epochs": [1, 2, 3]},
        {"first_epoch": 4, "frozen_blocks": [0, 1, 2, 3], "digests": {}, "verified_after_epochs": [4]},
        {"first_epoch": 5, "frozen_blocks": list(range(9)), "digests": {}, "verified_after_epochs": [5, 6]}]},
        "decisions": [{"epoch": 2, "step": 8, "prefix_before": 0, "prefix_after": 0},
                      {"epoch": 3, "step": 12, "prefix_before": 0, "prefix_after": 4},
                      {"epoch": 4, "step": 16, "prefix_before": 4, "prefix_after": 9}]}
    run_dir = tmp_path / "d-yolov8n-auto"
    run_dir.mkdir()
    (run_dir / "freeze_audit.json").write_text(json.dumps(audit))
    row = collect_row("d", "yolov8n", "auto", run_dir)
    assert row["frozen_blocks"] == "auto → 0-8" and row["freezes"] == "0-3@4 0-8@5"
    frozen_params = sum(b["params"] for b in audit["blocks"] if b["index"] < 9)
    assert row["trainable_params"] == audit["totals"]["params"] - frozen_params
    assert row["series"]["freeze_epochs"] == [4, 5] and row["series"]["freeze_steps"] == [12, 16]
    assert "| auto | auto → 0-8 (0-3@4 0-8@5) |" in format_markdown([row], tmp_path)
    row["series"].update(epochs=[1, 2, 3, 4, 5, 6], map50=[0.1, 0.2, 0.3, 0.4, 0.5, 0.5],
                         grad_steps=list(range(1, 25)), grad_total=[1.0] * 24)
    png = plot_study([row], tmp_path / "study.png", "d · yolov8n")
    assert png.stat().st_size > 10_000


def test_seeds_repeat_every_run_with_its_seed_and_folder():
    runs = plan_study(["yolov8n"], ["insplad"], ["none", "fr2"], {"yolov8n": "pre.pt"}, seeds=[0, 1, 2])
    assert [r.name for r in runs] == ["insplad-yolov8n-none", "insplad-yolov8n-none-s1", "insplad-yolov8n-none-s2",
                                      "insplad-yolov8n-fr2", "insplad-yolov8n-fr2-s1", "insplad-yolov8n-fr2-s2"]
    for run in runs:
        args = run.train_args(Path("s"), ["--epochs", "3"])
        assert args[args.index("--seed") + 1] == str(run.seed)
    with pytest.raises(ValueError, match="--seeds 1,1 names an entry twice"):
        plan_study(["yolov8n"], ["insplad"], ["none"], seeds=[1, 1])


def test_over_seeds_the_report_gives_mean_and_std_and_marks_differences_beyond_the_spread():
    from yolofreeze.study.report import format_over_seeds

    def row(strategy, seed, map50):
        return {"dataset": "d", "model": "m", "strategy": strategy, "seed": seed, "status": "finished",
                "map50": map50, "map50_95": map50 / 2, "grad_norm_cv": 0.5, "grad_norm_cv_epochs": 0.2 + 0.1 * seed,
                "train_minutes": 1.0}

    group = [row("none", 0, 0.50), row("none", 1, 0.52), row("none", 2, 0.54),  # 0.52 ± 0.02
             row("fr1", 0, 0.51), row("fr1", 1, 0.55), row("fr1", 2, 0.53),  # 0.53 ± 0.02: within the spread
             row("fr2", 0, 0.70), row("fr2", 1, 0.71), row("fr2", 2, 0.72)]  # 0.71 ± 0.01: beyond it
    lines = format_over_seeds(group, [0, 1, 2])
    table = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ") and "runs" not in line}
    assert "| 3/3 | 0.520 ± 0.020 | 0.260 ± 0.010 | - |" in table["none"]
    assert "| +0.010 |" in table["fr1"]
    assert "| +0.190* |" in table["fr2"] and table["fr2"].endswith("| 50% ± 0% | 30% ± 10% |")  # CV steps, epochs


@pytest.mark.parametrize("argv, message", [(["--seed", "3"], "--seed is set by the study"),
                                           (["--seeds", "a"], "--seeds: a: seeds are whole numbers")])
def test_seed_flags_are_checked(argv, message, tiny, tmp_path, capsys):
    assert study_main(["--data", str(tiny[0]), *argv, "--project", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_cam_images_are_drawn_once_per_dataset_the_same_for_every_run(tiny):
    from yolofreeze.data import read_dataset
    from yolofreeze.study.cams import pick_images

    records = read_dataset(tiny[0], "yolo").splits["val"]
    first, again = pick_images(records, 3), pick_images(list(reversed(records)), 3)
    assert [r.path for r in first] == [r.path for r in again] and len(first) == 3
    assert len({r.path for r in first}) == 3 and len(pick_images(records, 100)) == len(records)



def test_augmentation_is_a_study_axis_with_its_own_run_names_and_no_frozen_cache():
    runs = plan_study(["yolov8n"], ["insplad"], ["none", "fr3"], {"yolov8n": "pre.pt"}, seeds=(0, 1),
                      augments=("none", "default"))
    assert [r.name for r in runs] == [
        "insplad-yolov8n-none", "insplad-yolov8n-none-s1", "insplad-yolov8n-fr3", "insplad-yolov8n-fr3-s1",
        "insplad-yolov8n-none-aug", "insplad-yolov8n-none-aug-s1", "insplad-yolov8n-fr3-aug", "insplad-yolov8n-fr3-aug-s1"]
    augmented = runs[6].train_args(Path("s"), ["--cache-frozen", "ram"])
    assert augmented[augmented.index("--augment") + 1] == "default" and "--cache-frozen" not in augmented
    plain = runs[2].train_args(Path("s"), ["--cache-frozen", "ram"])
    assert plain[plain.index("--augment") + 1] == "none" and "--cache-frozen" in plain
    with pytest.raises(ValueError, match="--augment 'heavy'"):
        plan_study(["yolov8n"], ["insplad"], ["none"], augments=("heavy",))


def test_the_report_compares_each_strategy_with_and_without_augmentation():
    from yolofreeze.study.report import format_augment_comparison

    def row(strategy, augment, seed, map50):
        return {"dataset": "d", "model": "m", "strategy": strategy, "augment": augment, "seed": seed,
                "map50": map50, "map50_95": map50 / 2}

    rows = [row("none", "none", s, 0.60 + 0.01 * s) for s in range(3)]  # 0.610 ± 0.010
    rows += [row("fr3", "none", s, 0.50 + 0.01 * s) for s in range(3)]  # 0.510 ± 0.010
    rows += [row("none", "default", s, 0.615 + 0.01 * s) for s in range(3)]  # +0.015: within the spread
    rows += [row("fr3", "default", s, 0.20 + 0.01 * s) for s in range(3)]  # -0.300: the collapse
    lines = format_augment_comparison(rows)
    assert lines[0] == "## d · m: with and without augmentation"
    assert "| fr3 | mAP50 | 0.510 ± 0.010 | 0.210 ± 0.010 | -0.300* |" in lines
    assert "| none | mAP50 | 0.610 ± 0.010 | 0.625 ± 0.010 | +0.015 |" in lines
    assert format_augment_comparison([r for r in rows if r["augment"] == "none"]) == []
