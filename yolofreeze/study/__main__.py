"""The layer-freezing study in one command: every dataset x model x strategy, trained with the same recipe.

    python -m yolofreeze.study --models yolov8n,yolov10n --data insplad --strategies scratch,none,fr1,fr2,fr3 \\
        --epochs 1000 --patience 50 --seeds 0,1,2 [--name NAME] [--dry-run] [--devices 0,1,2,3] [--cam N] [--export int8 [--calib 200]] \\
        [--launcher slurm --slurm-partition gpu --gpus-per-run 1 --timeout-min 1440] [trainer flags …]
    python -m yolofreeze.study --status runs/study/NAME

Strategies are the paper's: ``scratch`` (random initialisation, nothing frozen), ``none`` (fine-tune everything
from the pretrained weights), ``fr1`` / ``fr2`` / ``fr3`` / ``backbone`` (``--freeze`` presets) — or any other
``--freeze`` value (``fr2`` and ``9`` are the same plan), and ``auto`` (adaptive freezing; the ``--auto-*`` flags go
to it alone). Every other flag is passed to each training run unchanged (``--imgsz``, ``--batch``, ``--frozen-bn``,
``--lr-mult``, ``--unfreeze``, …). How the runs go: :mod:`.runner`.
"""
from __future__ import annotations

import argparse
from functools import partial
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli import ArgumentParser, entry_point, non_negative_int, positive_int
from ..data import DatasetInfo, build_dataloader, resolve_dataset
from ..deploy import require
from ..freezing.memory import format_plan_memory, profile_plan_memory
from ..freezing.plan import format_audit
from ..model import build_model
from ..training.loss import build_loss
from ..training.optim import build_optimizer
from ..training.setup import parse_train_args
from .demo import prepare_demo
from .launch import SlurmOptions, check_slurm, format_states, read_plan, run_states, submit_runs, write_plan
from .report import write_report
from .runner import (STRATEGIES, StudyRun, check_start_weights, dataset_label, flag_given, plan_study, run_status,
                     run_study, weights_table)


def seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2``: whole numbers >= 0."""
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: seeds are whole numbers like 0,1,2") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text}: seeds are whole numbers >= 0 like 0,1,2")
    return seeds


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The study's own options, and the trainer flags to pass through to every run."""
    parser = ArgumentParser("python -m yolofreeze.study", __doc__, allow_abbrev=False)  # --seed is a train.py flag
    parser.add_argument("--models", default=None, help="comma-separated architectures (default yolov8n)")
    parser.add_argument("--data", default=None, help="comma-separated datasets (names, data.yaml, folders)")
    parser.add_argument("--strategies", default=None,
                        help=f"comma-separated: scratch, none, fr1, fr2, fr3, backbone, auto, or --freeze values "
                             f"(default {','.join(STRATEGIES)}; --demo adds auto)")
    parser.add_argument("--weights", default=None,
                        help="pretrained start per model: MODEL=PATH,… or one path for a single model (default: "
                             "the official COCO weights of each model)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="epochs per run (train.py's default)")
    parser.add_argument("--patience", type=non_negative_int, default=None, help="early-stopping patience")
    parser.add_argument("--seeds", type=seed_list, default=[0],
                        help="comma-separated seeds: each run is repeated per seed (folders …-s1, …-s2; seed 0 has "
                             "no suffix) and study.md reports mean ± std per strategy")
    parser.add_argument("--name", default=None, help="study folder name under --project (default: the datasets "
                                                     "and models)")
    parser.add_argument("--project", default="runs/study", help="folder of the study folders")
    parser.add_argument("--devices", default=None,
                        help="GPU ids, e.g. 0,1,2,3: one run per GPU (group) at a time; default one run at a time")
    parser.add_argument("--gpus-per-run", type=non_negative_int, default=1,
                        help="GPUs per run with --devices or --launcher slurm (more than 1: each run is a torchrun "
                             "job; 0 with slurm: CPU-only tasks)")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local: train here (one run at a time, or one per GPU group with --devices); slurm: "
                             "submit every unfinished run as one Slurm job array (submitit), then follow with "
                             "--status")
    parser.add_argument("--slurm-partition", default=None, help="Slurm partition of the tasks")
    parser.add_argument("--timeout-min", type=positive_int, default=1440,
                        help="Slurm time limit per task in minutes; a task that reaches it (or is preempted) is "
                             "requeued and resumes from last.pt")
    parser.add_argument("--slurm-array-parallelism", type=positive_int, default=256,
                        help="at most this many tasks of the array run at once")
    parser.add_argument("--cpus-per-run", type=positive_int, default=None, help="Slurm CPUs per task")
    parser.add_argument("--status", type=Path, default=None, metavar="STUDY_DIR",
                        help="print each run's state (queued, running, finished, failed, stopped) and redraw the "
                             "report from the finished runs; trains nothing")
    parser.add_argument("--augment", default="none",
                        help="comma-separated augmentation presets, a study axis: none (the paper's protocol), light, "
                             "default (the reference's); augmented runs are named …-aug (default) or …-aug-light, "
                             "and study.md compares each strategy with and without")
    parser.add_argument("--cam", type=non_negative_int, default=None, metavar="N",
                        help="after training, Grad-CAM of every run's best.pt on N validation images (seeded, the "
                             "same for every run): a figure per dataset and model and a column in the report "
                             "(default 0; --demo: 4)")
    parser.add_argument("--export", choices=("int8",), default=None,
                        help="after training, export every run's best.pt to float32 and INT8 ONNX and report mAP, "
                             "the INT8 drop, file sizes and latency (onnxruntime, 1 thread and all)")
    parser.add_argument("--calib", type=positive_int, default=200,
                        help="train images that calibrate --export int8 (default 200)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan, each run's freeze audit and memory estimate; train nothing")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report of the finished runs")
    parser.add_argument("--demo", action="store_true",
                        help="the offline miniature of the paper: pretrain on a generated source domain, then the "
                             "study on a generated target domain (6 to 10 CPU minutes)")
    args, passthrough = parser.parse_known_args(argv)
    for flag in ("--model", "--freeze", "--project", "--name", "--resume", "--weights", "--seed"):
        if flag_given(passthrough, flag):
            parser.error(f"{flag} is set by the study for each run; use --models / --strategies / --weights / "
                         f"--seeds")
    if passthrough and not passthrough[0].startswith("--"):
        parser.error(f"unexpected argument {passthrough[0]!r}")
    if args.gpus_per_run == 0 and args.launcher != "slurm":
        parser.error("--gpus-per-run 0 applies with --launcher slurm")
    devices = [d for d in (args.devices or "").split(",") if d]
    if devices and len(devices) % args.gpus_per_run:
        parser.error(f"--devices {args.devices}: {len(devices)} GPUs do not split into groups of "
                     f"{args.gpus_per_run}")
    if not args.data and not args.demo and not args.status:
        parser.error("give --data (one or more datasets), or --demo (or --status STUDY_DIR)")
    if args.launcher == "slurm" and (devices or args.demo):
        parser.error("--launcher slurm places the runs itself: leave out " + ("--devices" if devices else "--demo"))
    args.devices = devices
    return args, passthrough


def common_args(args: argparse.Namespace, passthrough: list[str]) -> list[str]:
    """Flags every run gets: epochs, patience, then the pass-through trainer flags (each run adds its seed)."""
    common = []
    if args.epochs is not None:
        common += ["--epochs", str(args.epochs)]
    if args.patience is not None:
        common += ["--patience", str(args.patience)]
    return common + passthrough


def print_dry_run(runs: Sequence[StudyRun], study_dir: Path, common: list[str],
                  datasets: dict[str, DatasetInfo]) -> None:
    """The plan without training: a table of the runs and their state, then per run its freeze audit and the
    memory of one training step (per ``--unfreeze`` phase) measured on a copy of the (randomly initialised) model
    with a real batch. ``datasets``: each run's ``data`` resolved (:func:`yolofreeze.data.resolve_dataset`)."""
    print(f"study {study_dir}: {len(runs)} runs")
    print(f"{'#':>3}  {'run':<40} {'weights':<24} state")
    for k, run in enumerate(runs, start=1):
        print(f"{k:>3}  {run.name:<40} {run.weights:<24} {run_status(study_dir / run.name)}")
    for run in runs:
        settings, _ = parse_train_args([*common, "--data", run.data, "--freeze", run.freeze, "--augment",
                                        run.augment])
        info = datasets[run.data]
        cfg = settings.config(info)
        model = build_model(run.model, names=info.names)
        plan = settings.plan(model)
        plan.apply(model)
        batch = next(iter(build_dataloader(info.splits["train"][:cfg.batch], cfg.imgsz, cfg.batch)))
        phases = profile_plan_memory(model, plan, build_loss(model), batch.images.float() / 255, batch.targets,
                                     lambda m, phase: build_optimizer(m, cfg, phase.trainable, plan.lr_split()))
        print(f"\n== {run.name} (start: {run.weights}) ==\n{format_audit(plan.audit(model))}\n"
              f"{format_plan_memory(phases)}")
        del model, phases


def print_status(study_dir: Path, say) -> int:
    """``--status``: each run's state, then the report redrawn from the finished runs."""
    runs, _, cam, calib = read_plan(study_dir)
    states = run_states(study_dir, runs)
    print(format_states(states))
    report = write_report(runs, study_dir, cam, calib, say)
    finished = sum(s.state == "finished" for s in states)
    print(f"\nreport: {study_dir / 'study.md'} ({finished} of {len(runs)} runs finished"
          + (f"; {len(runs) - finished} still missing)" if finished < len(runs) else ")")
          + f", plots: {', '.join(p.name for p in report.plots)}")
    return 0


@entry_point
def main(argv: list[str] | None = None) -> int:
    args, passthrough = parse_args(argv)
    say = partial(print, flush=True)
    if args.status:
        return print_status(args.status, say)
    if args.launcher == "slurm":
        check_slurm()  # submitit and sbatch, before anything is prepared
    if args.demo:
        args, passthrough = prepare_demo(args, passthrough, say)
    models, datasets = (args.models or "yolov8n").split(","), args.data.split(",")
    strategies = (args.strategies or ",".join(STRATEGIES)).split(",")
    runs = plan_study(models, datasets, strategies, weights_table(args.weights, models), args.seeds,
                      args.augment.split(","))
    common = common_args(args, passthrough)
    parse_train_args(common)  # refuse a flag train.py would refuse before any run starts (one line, exit 2)
    if args.export:  # the export extra, checked before any run trains
        for module in ("onnx", "onnxruntime"):
            require(module)
    resolved = {dataset: resolve_dataset(dataset) for dataset in datasets}  # a missing one stops the study here
    name = args.name or "_".join([*map(dataset_label, datasets), *models])
    study_dir = Path(args.project) / name
    if args.dry_run:
        print_dry_run(runs, study_dir, common, resolved)
        return 0
    if not args.report_only:
        check_start_weights(runs, study_dir)  # offline with nothing cached: stop here, not in every run
    study_dir.mkdir(parents=True, exist_ok=True)
    write_plan(study_dir, runs, common, args.cam or 0, args.calib if args.export else None)
    print(f"study {study_dir}: {len(runs)} runs ({len(datasets)} datasets x {len(models)} models x "
          f"{len(strategies)} strategies x {len(args.seeds)} seeds)", flush=True)
    if args.launcher == "slurm" and not args.report_only:
        options = SlurmOptions(args.slurm_partition, args.gpus_per_run, args.cpus_per_run, args.timeout_min,
                               args.slurm_array_parallelism)
        jobs = submit_runs(runs, study_dir, common, options)
        print(f"submitted {len(jobs)} runs" + (f" as Slurm job array {jobs[0].job_id.split('_')[0]}" if jobs else
                                               " (every run is finished or running)")
              + f"; follow with: python -m yolofreeze.study --status {study_dir}")
        return 0
    codes = {} if args.report_only else run_study(runs, study_dir, common, args.devices, args.gpus_per_run, say)
    report = write_report(runs, study_dir, args.cam or 0, args.calib if args.export else None, say)
    print(report.markdown)
    print(f"\nreport: {study_dir / 'study.md'}, study.csv, plots: {', '.join(p.name for p in report.plots)}")
    failed = [name for name, code in codes.items() if code]
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (logs in {study_dir / 'logs'}); run the same "
              f"command again to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
