"""Fine-tune a YOLOv8/YOLOv10 detector with layer freezing: ``python train.py --data insplad --freeze 9``.

With no arguments it trains yolov8n from scratch on the embedded ``demo`` dataset (offline, a few CPU minutes).
Otherwise the start is the official COCO-pretrained checkpoint of ``--model`` (``--weights none``: from scratch),
with the reference's SGD recipe (lr 0.01 → 0.0001, momentum 0.937, nominal batch 64, 3 warm-up epochs) and no
augmentation. Writes runs/train/<name>/: weights/{last,best}.pt, results.csv, results.png, args.yaml,
freeze_audit.json (what was frozen, with integrity digests), memory.json (one step's memory breakdown),
grad_norms.csv and grad_norms.png (per-step gradient L2 norms per block, part and in total).
``--resume runs/train/<name>`` continues a killed run. Multi-GPU: ``torchrun --nproc_per_node N train.py …``.
``--cache-frozen ram|disk`` (frozen blocks a prefix, their batch-norm in eval) computes the frozen blocks' outputs
once and trains from the first trainable block.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from yolofreeze.cache import DTYPES, MODES
from yolofreeze.cli import ArgumentParser, default_device, device, entry_point, image_size, non_negative_int, \
    positive_int
from yolofreeze.convert import load_checkpoint, load_model
from yolofreeze.data import check_dataset, format_report, resolve_dataset
from yolofreeze.evaluate import format_result
from yolofreeze.freeze import BN_MODES, FreezePlan, FrozenTensorChanged, format_audit
from yolofreeze.model import YOLO, build_model, with_class_names
from yolofreeze.monitor.gradnorm import format_grad_norm_summary
from yolofreeze.optim import TrainConfig, accumulate
from yolofreeze.runs import new_run_dir
from yolofreeze.train import Distributed, Trainer, TrainingDiverged, TrainSummary, estimate_feature_cache, \
    format_plan_memory, seed_everything

EXIT_DIVERGED = 1
# The embedded first run: small enough for a 2-core CPU in a few minutes, offline (no pretrained download).
DEMO_DEFAULTS = {"weights": "none", "epochs": 10, "imgsz": 160, "batch": 8, "patience": 0}
RECIPE_DEFAULTS = {"epochs": 100, "imgsz": 640, "batch": 16, "patience": 100}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser("train.py", __doc__)
    parser.add_argument("--model", default=None,
                        help="architecture name or yaml (yolov8n … yolov10x), or a .pt (= --weights); default: what "
                             "--weights holds, else yolov8n")
    parser.add_argument("--weights", default=None,
                        help="starting checkpoint: ours or an official .pt/name, or 'none' (from scratch); default: "
                             "the official COCO weights of --model (the demo dataset: none)")
    parser.add_argument("--data", default="demo", help="data.yaml, dataset folder, or insplad/coco8/coco/demo")
    parser.add_argument("--freeze", nargs="+", default=["0"], metavar="BLOCKS",
                        help="N freezes blocks 0..N-1; or block numbers/ranges (0 3 5, 0-3,5); or a preset: fr1 (4 "
                             "blocks), fr2 (9), fr3 (all but the head), backbone, none")
    parser.add_argument("--frozen-bn", choices=BN_MODES, default="eval",
                        help="batch-norm of frozen blocks: eval (statistics fixed, the current reference) or train "
                             "(statistics keep updating, older releases / YOLOv10 authors)")
    parser.add_argument("--unfreeze", metavar="E:BLOCKS,...", default=None,
                        help="progressive unfreezing: after E epochs freeze BLOCKS instead (any --freeze form), e.g. "
                             "--freeze fr3 --unfreeze 10:fr1,20:none trains the head first, then more")
    parser.add_argument("--lr-mult", metavar="PART=X,...", default=None,
                        help="learning-rate multiplier per part or block range, e.g. backbone=0.1,neck=0.5,head=1 "
                             "or 0-9=0.1 (unnamed blocks: 1)")
    parser.add_argument("--grad-norms", choices=("on", "off"), default="on",
                        help="log per-step gradient L2 norms per block/part/total to grad_norms.csv (default on)")
    parser.add_argument("--epochs", type=positive_int, help=f"epochs (default {RECIPE_DEFAULTS['epochs']}; demo "
                                                            f"{DEMO_DEFAULTS['epochs']})")
    parser.add_argument("--patience", type=non_negative_int,
                        help=f"stop after this many epochs without a better fitness, 0: never (default "
                             f"{RECIPE_DEFAULTS['patience']})")
    parser.add_argument("--batch", type=positive_int, help=f"images per batch over all processes (default "
                                                           f"{RECIPE_DEFAULTS['batch']}; demo {DEMO_DEFAULTS['batch']})")
    parser.add_argument("--imgsz", type=image_size, help=f"training image size in pixels (default "
                                                         f"{RECIPE_DEFAULTS['imgsz']}; demo {DEMO_DEFAULTS['imgsz']})")
    parser.add_argument("--lr0", type=float, default=TrainConfig.lr0, help="initial learning rate")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (data order, fresh layers)")
    parser.add_argument("--device", type=device, default=None, help=f"cpu, cuda or cuda:N (default {default_device()})")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="data-loader worker processes")
    parser.add_argument("--cache", action="store_true", help="keep decoded training images in RAM")
    parser.add_argument("--cache-frozen", choices=MODES, default=None,
                        help="compute the frozen prefix's outputs once (train and val images) and keep them in ram "
                             "or on disk (the run folder; deleted at the end); needs frozen blocks 0..k-1 (in "
                             "every --unfreeze phase) with --frozen-bn eval")
    parser.add_argument("--cache-dtype", choices=tuple(DTYPES), default=None,
                        help="storage of --cache-frozen outputs: fp32 (exact) or fp16 (half the size; default fp32)")
    parser.add_argument("--no-amp", action="store_true", help="full float32 on CUDA (AMP is never used on CPU)")
    parser.add_argument("--name", default=None, help="run folder name under --project (default <data>-<model>-"
                                                     "freeze<N>; never overwritten: name2, name3 …)")
    parser.add_argument("--project", default="runs/train", help="folder of the run folders")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue a killed run from RUN_DIR/weights/last.pt (other options are ignored "
                             "except --device and --workers)")
    args = parser.parse_args(argv)
    if args.model and Path(args.model).suffix == ".pt":  # a checkpoint given as --model: it is the start
        if args.weights:
            parser.error(f"--model {args.model} is a checkpoint and --weights {args.weights} another; give one")
        args.model, args.weights = None, args.model
    if args.lr0 <= 0:
        parser.error(f"--lr0 {args.lr0} must be positive")
    if args.cache_dtype and not args.cache_frozen:
        parser.error(f"--cache-dtype {args.cache_dtype} applies with --cache-frozen ram or disk")
    args.cache_dtype = args.cache_dtype or "fp32"
    return args


def start_model(args: argparse.Namespace, demo: bool, names: list[str]) -> tuple[YOLO, str]:
    """The model training starts from (from scratch: already with ``names``), and where it came from."""
    weights = args.weights or (DEMO_DEFAULTS["weights"] if demo else f"{args.model or 'yolov8n'}.pt")
    if weights.lower() == "none":
        spec = args.model or "yolov8n"
        return build_model(spec, names=names), f"{spec} from scratch (random initialisation, seed {args.seed})"
    try:
        model = load_model(weights)
    except ConnectionError as error:
        raise ConnectionError(f"{error} Or train from scratch with --weights none.") from None
    if args.model and Path(args.model).stem not in (model.arch, Path(weights).stem):
        raise ValueError(f"--model {args.model} does not match --weights {weights}, which holds {model.arch}; "
                         f"leave out --model")
    return model, f"{model.arch} from {weights}"


def new_run(args: argparse.Namespace, dist: Distributed) -> Trainer:
    """Build the trainer of a new run: dataset, starting model aligned with its classes, plan, run folder."""
    info = resolve_dataset(args.data)
    demo = str(args.data).lower() == "demo"
    defaults = DEMO_DEFAULTS if demo else RECIPE_DEFAULTS
    cfg = TrainConfig(**{key: getattr(args, key) if getattr(args, key) is not None else defaults[key]
                         for key in ("epochs", "imgsz", "batch", "patience")}, seed=args.seed, lr0=args.lr0)
    info = report_dataset(info, dist)
    seed_everything(cfg.seed)
    model, origin = start_model(args, demo, info.names)
    if model.names != info.names:
        transfer = with_class_names(model, info.names)
        model = transfer.model
        origin += f"; classes changed to the dataset's {len(info.names)}: {transfer.message()}"
    plan = FreezePlan.parse(args.freeze, model, args.frozen_bn)
    if args.unfreeze:
        plan = plan.with_unfreeze(args.unfreeze, model)
        plan.check_schedule(cfg.epochs)
    if args.lr_mult:
        plan = plan.with_lr_mult(args.lr_mult, model)
    if args.cache_frozen:  # refuse before the run folder exists; the trainer's own estimate is printed
        estimate_feature_cache(model, info, cfg, plan, args.cache_frozen, args.cache_dtype, args.project)
    name = args.name or f"{info.root.name}-{model.arch}-freeze{'_'.join(args.freeze)}"
    run_dir = dist.broadcast(new_run_dir(args.project, name) if dist.main else None)
    device_name = args.device or default_device()
    settings = {"model": model.arch, "weights": origin, "data": str(args.data), "freeze": sorted(plan.frozen),
                "frozen_bn": plan.frozen_bn, "unfreeze": args.unfreeze, "lr_mult": args.lr_mult,
                "plan": plan.to_dict(), "grad_norms": args.grad_norms, "device": device_name,
                "workers": args.workers, "cache": args.cache, "amp": not args.no_amp, "run_dir": str(run_dir),
                "world_size": dist.world_size, "cache_frozen": args.cache_frozen, "cache_dtype": args.cache_dtype}
    if dist.main:
        print(f"model: {origin}\n{format_audit(plan.audit(model))}")
    return Trainer(model, info, cfg, run_dir, plan, device_name, args.workers, args.cache,
                   amp=None if not args.no_amp else False, settings=settings, progress=sys.stderr.isatty(),
                   grad_norms=args.grad_norms == "on", cache_frozen=args.cache_frozen, cache_dtype=args.cache_dtype)


def resumed_run(args: argparse.Namespace, dist: Distributed) -> Trainer:
    """Rebuild a killed run from its ``last.pt`` and restore its training state."""
    run_dir = Path(args.resume)
    last = run_dir / "weights" / "last.pt"
    if not last.is_file():
        raise FileNotFoundError(f"nothing to resume in {run_dir}: {last} does not exist (a run writes it after its "
                                f"first epoch)")
    ckpt = load_checkpoint(last)
    if "optimizer" not in ckpt.get("train", {}):
        raise ValueError(f"{last} holds no training state to resume from")
    state = ckpt["train"]
    settings, cfg = dict(state["settings"]), TrainConfig(**state["config"])
    info = report_dataset(resolve_dataset(settings["data"]), dist)
    model = load_model(last)
    plan = FreezePlan.from_dict(settings["plan"])
    settings.update(device=args.device or settings["device"], workers=args.workers)
    if dist.main:
        print(f"resuming {run_dir} after epoch {state['epoch']} of {cfg.epochs}\n"
              f"{plan.at(state['epoch']).describe(model)}")
    trainer = Trainer(model, info, cfg, run_dir, plan, settings["device"], settings["workers"], settings["cache"],
                      amp=None if settings["amp"] else False, settings=settings, progress=sys.stderr.isatty(),
                      grad_norms=settings["grad_norms"] == "on", cache_frozen=settings.get("cache_frozen"),
                      cache_dtype=settings.get("cache_dtype") or "fp32")
    trainer.restore(ckpt)
    return trainer


def report_dataset(info, dist: Distributed):
    """Print the dataset table and its problems once (rank 0); return the dataset without unreadable files."""
    report = check_dataset(info)
    if dist.main:
        print(f"{info.format} dataset {info.root}: {info.nc} classes")
        print(format_report(report))
    return info.without(report.bad_paths)


def print_summary(summary: TrainSummary) -> None:
    """The one-screen end of a run: best epoch, its per-class table, time, where the files are."""
    how = "stopped early (patience)" if summary.stopped_early else "finished"
    print(f"\n{how} after {summary.epochs_run} epochs in {summary.seconds / 60:.1f} min; best epoch "
          f"{summary.best_epoch} (fitness {summary.best_fitness:.4f} = 0.1 mAP50 + 0.9 mAP50-95)")
    if summary.best is not None:
        print(format_result(summary.best))
    if summary.grad_norms:
        print(format_grad_norm_summary(summary.grad_norms))
    if summary.unreadable:
        print(f"{len(summary.unreadable)} training images could not be read and were skipped: "
              f"{', '.join(summary.unreadable[:5])}")
    plots = ", grad_norms.csv, grad_norms.png" if summary.grad_norms else ""
    print(f"results: {summary.run_dir}/results.csv, results.png{plots}, freeze_audit.json, memory.json; weights: "
          f"{summary.run_dir}/weights/best.pt (and last.pt)")


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dist = Distributed.from_env(args.device or default_device())
    logging.basicConfig(level=logging.INFO if dist.main else logging.WARNING, format="%(message)s")
    logging.getLogger("yolofreeze.data").setLevel(logging.WARNING)
    trainer = resumed_run(args, dist) if args.resume else new_run(args, dist)
    if dist.main:
        if trainer.cache_estimate is not None:
            print(trainer.cache_estimate.describe())
        if not args.resume:
            print(format_plan_memory(trainer.profile_memory()))
        cfg = trainer.cfg
        print(f"training {cfg.epochs} epochs on {len(trainer.data.splits['train'])} images "
              f"({trainer.nb} batches of {cfg.batch // dist.world_size}"
              f"{f' per process x {dist.world_size}' if dist.world_size > 1 else ''}, one SGD step per "
              f"{accumulate(cfg)} batches), imgsz {cfg.imgsz}, {trainer.device}{', AMP' if trainer.amp else ''}; "
              f"run folder {trainer.run_dir}")
    try:
        summary = trainer.fit()
    except (TrainingDiverged, FrozenTensorChanged) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    if dist.main:
        print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
