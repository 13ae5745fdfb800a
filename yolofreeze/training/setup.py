"""A training run from its settings: ``train.py``'s flags → :class:`RunSettings` → a ready :class:`Trainer`.

The one way to build a run. ``train.py`` (= ``python -m yolofreeze.train``) parses its flags with
:func:`parse_train_args` and calls :func:`new_trainer` or :func:`resumed_trainer`; the study checks its pass-through
flags with the same parser and builds the same plan for its dry run (:meth:`RunSettings.plan`).

A run records its settings (:meth:`RunSettings.to_dict`, plus what was resolved: architecture, start, plan, run
folder, process count) in ``args.yaml`` and in its checkpoints; ``--resume`` reads them back with
:meth:`RunSettings.from_dict`.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..cli import (ArgumentParser, default_device, device, fraction, image_size, non_negative_float,
                   non_negative_int, one_line, positive_float, positive_int)
from ..data import AUGMENT_PRESETS, DatasetInfo, check_dataset, format_report, resolve_dataset
from ..freezing.auto import WARMUP
from ..freezing.cache import DTYPES, MODES, estimate_run_cache
from ..freezing.plan import BN_MODES, FreezePlan, format_audit
from ..model import YOLO, build_model, with_class_names
from ..weights.checkpoints import load_checkpoint, load_model
from .board import EXTRA as TENSORBOARD_EXTRA
from .board import tensorboard_available
from .optim import AUGMENT_FIELDS, OPTIMIZERS, TrainConfig, optimizer_name, resolve_auto
from .runs import new_run_dir
from .trainer import Distributed, Trainer, compile_unavailable, seed_everything

TRAIN_MODULE = "yolofreeze.train"  # what ``python -m`` runs for one training run (the study launches it)
# The embedded first run: small enough for a 2-core CPU in a few minutes, offline (no pretrained download).
DEMO_DEFAULTS = {"weights": "none", "epochs": 10, "imgsz": 160, "batch": 8, "patience": 0}
RECIPE_DEFAULTS = {"epochs": 100, "imgsz": 640, "batch": 16, "patience": 100}
# TrainConfig fields with a flag of the reference's name (--weight-decay for weight_decay …); None: the default
RECIPE_HELP = {
    "optimizer": f"{', '.join(OPTIMIZERS)} (any case); auto: AdamW with a fitted lr0 for runs of up to 10,000 "
                 f"iterations, else SGD, as the reference decides (default SGD, the paper's)",
    "lr0": f"initial learning rate (default {TrainConfig.lr0}; auto sets its own)",
    "lrf": f"final learning rate as a fraction of lr0 (default {TrainConfig.lrf})",
    "momentum": f"SGD/RMSprop momentum, Adam's first beta (default {TrainConfig.momentum})",
    "weight_decay": f"weight decay for a batch of nbs images (default {TrainConfig.weight_decay})",
    "warmup_epochs": f"warm-up epochs, may be fractional (default {TrainConfig.warmup_epochs})",
    "warmup_momentum": f"momentum at the start of warm-up (default {TrainConfig.warmup_momentum})",
    "warmup_bias_lr": f"biases' learning rate at the start of warm-up (default {TrainConfig.warmup_bias_lr})",
    "nbs": f"nominal batch: images per optimiser step, by accumulating gradients (default {TrainConfig.nbs})",
    "cos_lr": "cosine learning-rate decay instead of linear (--no-cos-lr: linear, the default)",
    "box": f"box loss gain (default {TrainConfig.box})",
    "cls": f"classification loss gain (default {TrainConfig.cls})",
    "dfl": f"distribution focal loss gain (default {TrainConfig.dfl})",
    "fliplr": "augmentation: probability of a horizontal flip (default 0; --augment light: 0.5)",
    "hsv_h": "augmentation: hue jitter, fraction of the colour circle (default 0; light: 0.015)",
    "hsv_s": "augmentation: saturation jitter, fraction (default 0; light: 0.7)",
    "hsv_v": "augmentation: value (brightness) jitter, fraction (default 0; light: 0.4)",
    "mosaic": "augmentation: probability of a 4-image mosaic (default 0; --augment default: 1)",
    "degrees": "augmentation: rotation range in degrees (default 0)",
    "translate": "augmentation: shift range, fraction of imgsz (default 0; default: 0.1)",
    "scale": "augmentation: zoom range, 1 ± scale (default 0; default: 0.5)",
    "close_mosaic": "augmentation: no mosaic in the last N epochs (default 10)",
}
AUGMENT_FLAGS = tuple(name for name in AUGMENT_FIELDS if name != "close_mosaic")  # the transforms' own settings


def _optimizer_flag(text: str) -> str:
    try:
        return optimizer_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


RECIPE_TYPES = {"optimizer": _optimizer_flag, "lr0": positive_float, "nbs": positive_int,
                **dict.fromkeys(AUGMENT_FLAGS, fraction), "degrees": non_negative_float,
                "close_mosaic": non_negative_int}
# not "augment": the reference's args.yaml uses that name for test-time augmentation; fliplr and hsv_* carry ours
CFG_KEYS = ("epochs", "batch", "imgsz", "patience", "seed", *RECIPE_HELP)  # what --cfg FILE.yaml may set
Say = Callable[[str], None]


@dataclass(frozen=True)
class RunSettings:
    """What ``train.py``'s flags ask for (None: the default of the recipe, or of the embedded demo dataset)."""

    data: str = "demo"
    model: str | None = None
    weights: str | None = None
    freeze: tuple[str, ...] = ("0",)
    frozen_bn: str = "eval"
    unfreeze: str | None = None
    lr_mult: str | None = None
    auto_interval: str = "1"
    auto_max: str = "backbone"
    auto_threshold: str = "median"
    auto_warmup: str = "skip"
    grad_norms: bool = True
    tensorboard: bool | None = None  # None: when the tensorboard package is installed
    epochs: int | None = None
    patience: int | None = None
    batch: int | None = None
    imgsz: int | None = None
    optimizer: str | None = None
    lr0: float | None = None
    lrf: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    warmup_momentum: float | None = None
    warmup_bias_lr: float | None = None
    nbs: int | None = None
    cos_lr: bool | None = None
    box: float | None = None
    cls: float | None = None
    dfl: float | None = None
    augment: str | None = None
    fliplr: float | None = None
    hsv_h: float | None = None
    hsv_s: float | None = None
    hsv_v: float | None = None
    mosaic: float | None = None
    degrees: float | None = None
    translate: float | None = None
    scale: float | None = None
    close_mosaic: int | None = None
    seed: int = 0
    device: str | None = None
    workers: int = 2
    cache_images: bool = False
    cache_frozen: str | None = None
    cache_dtype: str = "fp32"
    amp: bool | str = True  # True: fp16 on CUDA only; False: off; "fp16" / "bf16": on any device
    channels_last: bool = False
    fold_frozen: bool = True
    compile: bool = False
    name: str | None = None
    project: str = "runs/train"

    def board(self) -> bool:
        """Whether the run writes TensorBoard event files (``tensorboard``, or when unset whether it can)."""
        return tensorboard_available() if self.tensorboard is None else self.tensorboard

    @property
    def demo(self) -> bool:
        """Whether the run trains on the embedded ``demo`` dataset (its own defaults apply)."""
        return str(self.data).lower() == "demo"

    def config(self, data: DatasetInfo | None = None) -> TrainConfig:
        """The recipe: the given epochs, image size, batch and patience, or the defaults (the demo's on ``demo``),
        and every recipe setting given (else :class:`TrainConfig`'s default). With the run's ``data``,
        ``optimizer="auto"`` is resolved for it (:func:`~yolofreeze.training.optim.resolve_auto`). ValueError for a
        value the recipe refuses."""
        defaults = DEMO_DEFAULTS if self.demo else RECIPE_DEFAULTS
        given = {key: getattr(self, key) for key in ("epochs", "imgsz", "batch", "patience")}
        preset = dataclasses.asdict(AUGMENT_PRESETS[self.augment or "none"])  # the flags of single transforms win
        recipe = {**preset, **{key: getattr(self, key) for key in RECIPE_HELP if getattr(self, key) is not None}}
        cfg = TrainConfig(**{k: v if v is not None else defaults[k] for k, v in given.items()}, seed=self.seed,
                          **recipe)
        if data is None:
            return cfg
        return resolve_auto(cfg, data.nc, len(data.splits.get("train", ())))

    def plan(self, model: YOLO) -> FreezePlan:
        """The run's whole freeze plan on ``model`` (:meth:`FreezePlan.build`)."""
        return FreezePlan.build(list(self.freeze), model, self.frozen_bn, self.unfreeze, self.lr_mult,
                                self.config().epochs, (self.auto_interval, self.auto_max, self.auto_threshold,
                                                          self.auto_warmup))

    def to_dict(self) -> dict:
        """Plain values (``args.yaml``, checkpoints)."""
        return {**dataclasses.asdict(self), "freeze": list(self.freeze)}

    @classmethod
    def from_dict(cls, data: dict) -> RunSettings:
        """The settings :meth:`to_dict` wrote (other keys, e.g. what the run resolved, are ignored). Runs recorded
        before these settings existed (``grad_norms: "on"/"off"``, ``cache``) read the same."""
        data = dict(data)
        if isinstance(data.get("grad_norms"), str):
            data["grad_norms"] = data["grad_norms"] == "on"
        if "cache" in data and "cache_images" not in data:
            data["cache_images"] = bool(data["cache"])
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        return cls(**{**values, "freeze": tuple(map(str, values.get("freeze", cls.freeze)))})


def train_parser(prog: str = "train.py", description: str | None = None) -> argparse.ArgumentParser:
    """``train.py``'s flags (the study passes the ones it does not set itself through to every run)."""
    parser = ArgumentParser(prog, description or "Train a YOLOv8/YOLOv10 detector with layer freezing.")
    parser.add_argument("--model", default=None,
                        help="architecture name or yaml (yolov8n … yolov10x), or a .pt (= --weights); default: what "
                             "--weights holds, else yolov8n")
    parser.add_argument("--weights", default=None,
                        help="starting checkpoint: ours or an official .pt/name, or 'none' (from scratch); default: "
                             "the official COCO weights of --model (the demo dataset: none)")
    parser.add_argument("--data", default="demo", help="data.yaml, dataset folder, or insplad/coco8/coco/demo")
    parser.add_argument("--freeze", nargs="+", default=["0"], metavar="BLOCKS",
                        help="N freezes blocks 0..N-1; or block numbers/ranges (0 3 5, 0-3,5); or a preset: fr1 (4 "
                             "blocks), fr2 (9), fr3 (all but the head), backbone, none; or auto (auto:fr1, auto:4: "
                             "from that prefix): freeze leading blocks as their gradients stop changing")
    parser.add_argument("--frozen-bn", choices=BN_MODES, default="eval",
                        help="batch-norm of frozen blocks: eval (statistics fixed, the current reference) or train "
                             "(statistics keep updating, older releases / YOLOv10 authors)")
    parser.add_argument("--unfreeze", metavar="E:BLOCKS,...", default=None,
                        help="progressive unfreezing: after E epochs freeze BLOCKS instead (any --freeze form), e.g. "
                             "--freeze fr3 --unfreeze 10:fr1,20:none trains the head first, then more")
    parser.add_argument("--lr-mult", metavar="PART=X,...", default=None,
                        help="learning-rate multiplier per part or block range, e.g. backbone=0.1,neck=0.5,head=1 "
                             "or 0-9=0.1 (unnamed blocks: 1)")
    parser.add_argument("--auto-interval", default="1", metavar="N|Ns",
                        help="--freeze auto: decide every N epochs, or every N optimiser steps with Ns (20s); "
                             "decisions take effect from the next epoch")
    parser.add_argument("--auto-max", default="backbone", metavar="PRESET|N",
                        help="--freeze auto: never freeze past fr2, backbone, fr3 or N blocks")
    parser.add_argument("--auto-threshold", default="median", metavar="median|X",
                        help="--freeze auto: a block freezes when its gradient's relative change between intervals is "
                             "below the median of the trainable blocks' (AutoFreeze) or below X")
    parser.add_argument("--auto-warmup", choices=WARMUP, default="skip",
                        help="--freeze auto during warm-up: skip (no evidence while the lr ramps) or relative (decide "
                             "on each block's share of the gradient, where the schedule's change cancels)")
    parser.add_argument("--grad-norms", choices=("on", "off"), default="on",
                        help="log per-step gradient L2 norms per block/part/total to grad_norms.csv")
    parser.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                        help="write the results.csv columns and per-block gradient-norm histograms to TensorBoard "
                             "event files in the run folder (default: on when tensorboard is installed)")
    parser.add_argument("--epochs", type=positive_int, help=f"epochs (default {RECIPE_DEFAULTS['epochs']}; demo "
                                                            f"{DEMO_DEFAULTS['epochs']})")
    parser.add_argument("--patience", type=non_negative_int,
                        help=f"stop after this many epochs without a better fitness, 0: never (default "
                             f"{RECIPE_DEFAULTS['patience']})")
    parser.add_argument("--batch", type=positive_int, help=f"images per batch over all processes (default "
                                                           f"{RECIPE_DEFAULTS['batch']}; demo {DEMO_DEFAULTS['batch']})")
    parser.add_argument("--imgsz", type=image_size, help=f"training image size in pixels (default "
                                                         f"{RECIPE_DEFAULTS['imgsz']}; demo {DEMO_DEFAULTS['imgsz']})")
    recipe = parser.add_argument_group("recipe (the reference's names; --cfg FILE.yaml sets any of them, flags win)")
    recipe.add_argument("--augment", choices=tuple(AUGMENT_PRESETS), default=None,
                        help="training augmentation: none (the paper's protocol, default), light (horizontal flip "
                             "and HSV jitter at the reference's values) or default (the reference's defaults: also "
                             "mosaic, translate 0.1, scale 0.5); the flags below set each one")
    recipe.add_argument("--cfg", default=None, metavar="FILE.yaml",
                        help="a yaml of training settings (epochs, batch, imgsz, patience, seed and the flags below, "
                             "by their reference names, e.g. a run's args.yaml); other keys are listed and ignored")
    for name, text in RECIPE_HELP.items():
        flag = "--" + name.replace("_", "-")
        if name == "cos_lr":
            recipe.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            recipe.add_argument(flag, type=RECIPE_TYPES.get(name, non_negative_float), default=None, help=text)
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (data order, fresh layers)")
    parser.add_argument("--device", type=device, default=None, help=f"cpu, cuda or cuda:N (default {default_device()})")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="data-loader worker processes")
    parser.add_argument("--cache", dest="cache_images", action="store_true",
                        help="keep the decoded, resized training images in RAM")
    parser.add_argument("--cache-frozen", choices=MODES, default=None,
                        help="compute the frozen prefix's outputs once (train and val images) and keep them in ram "
                             "or on disk (the run folder; deleted at the end); needs frozen blocks 0..k-1 (in "
                             "every --unfreeze phase) with --frozen-bn eval")
    parser.add_argument("--cache-dtype", choices=tuple(DTYPES), default=None,
                        help="storage of --cache-frozen outputs: fp32 (exact) or fp16 (half the size; default fp32)")
    parser.add_argument("--amp", choices=("fp16", "bf16"), default=None,
                        help="mixed precision on any device: fp16 (float16 autocast + gradient scaler) or bf16 "
                             "(bfloat16 autocast) (default: fp16 on CUDA, float32 on CPU)")
    parser.add_argument("--no-amp", action="store_true", help="full float32 on CUDA too")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                        help="train in the channels-last (NHWC) memory layout: 1.1-1.3x faster steps on CPU, but "
                             "PyTorch's CPU batch-norm statistics are less precise in it (gradients ~1e-3 off with "
                             "nothing frozen); default off: NCHW, the reference's exact step")
    parser.add_argument("--fold-frozen", action=argparse.BooleanOptionalAction, default=True,
                        help="run the frozen prefix (--frozen-bn eval) as a Conv+BN-folded inference copy, equal up "
                             "to float rounding (default on; --no-fold-frozen: the unfolded blocks)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the training forward/backward (compiles for a minute or more first; "
                             "pays on long runs, see the README)")
    parser.add_argument("--name", default=None, help="run folder name under --project (default <data>-<model>-"
                                                     "freeze<N>; never overwritten: name2, name3 …)")
    parser.add_argument("--project", default="runs/train", help="folder of the run folders")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue a killed run from RUN_DIR/weights/last.pt (other options are ignored "
                             "except --device and --workers)")
    return parser


def parse_train_args(argv: Sequence[str] | None, parser: argparse.ArgumentParser | None = None
                     ) -> tuple[RunSettings, str | None]:
    """``train.py``'s command line → ``(settings, the run folder to resume or None)``; bad flags exit with code 2
    and one line (argparse)."""
    parser = parser or train_parser()
    cfg_file = parser.parse_known_args(argv)[0].cfg
    if cfg_file:
        apply_cfg_file(parser, cfg_file)
    args = parser.parse_args(argv)
    if args.model and Path(args.model).suffix == ".pt":  # a checkpoint given as --model: it is the start
        if args.weights:
            parser.error(f"--model {args.model} is a checkpoint and --weights {args.weights} another; give one")
        args.model, args.weights = None, args.model
    if args.tensorboard and not tensorboard_available():
        parser.error(f"--tensorboard needs the tensorboard package, which is not installed: {TENSORBOARD_EXTRA}")
    if args.amp and args.no_amp:
        parser.error(f"--amp {args.amp} and --no-amp contradict each other; give one")
    if args.compile and (reason := compile_unavailable(args.device or default_device())):
        parser.error(reason)
    if args.cache_dtype and not args.cache_frozen:
        parser.error(f"--cache-dtype {args.cache_dtype} applies with --cache-frozen ram or disk")
    adaptive = len(args.freeze) == 1 and args.freeze[0].lower().startswith("auto")
    given = [flag for flag in ("--auto-interval", "--auto-max", "--auto-threshold", "--auto-warmup")
             if getattr(args, flag[2:].replace("-", "_")) != parser.get_default(flag[2:].replace("-", "_"))]
    if given and not adaptive:
        parser.error(f"{given[0]} applies with --freeze auto")
    flags = {k: v for k, v in vars(args).items() if k not in ("resume", "amp", "no_amp", "grad_norms", "freeze",
                                                              "cache_dtype", "cfg")}
    settings = RunSettings(**flags, freeze=tuple(args.freeze), grad_norms=args.grad_norms == "on",
                           amp=args.amp or not args.no_amp, cache_dtype=args.cache_dtype or "fp32")
    try:
        cfg = settings.config()
    except ValueError as error:
        parser.error(str(error))
    if settings.cache_frozen and cfg.augmentation().active:
        source = (f"--augment {settings.augment}" if settings.augment and AUGMENT_PRESETS[settings.augment].active
                  else next(f"--{name.replace('_', '-')} {getattr(cfg, name)}" for name in AUGMENT_FLAGS
                            if getattr(cfg, name)))
        parser.error(f"--cache-frozen computes the frozen prefix's outputs of each image once, but {source} changes "
                     f"the images every epoch; leave out one of them")
    if settings.close_mosaic is not None and cfg.mosaic > 0 and settings.close_mosaic > cfg.epochs:
        parser.error(f"--close-mosaic {settings.close_mosaic} is more than the run's {cfg.epochs} epochs")
    if cfg.mosaic > 0 and cfg.close_mosaic >= cfg.epochs:
        print(f"warning: mosaic is off for the whole run: --close-mosaic {cfg.close_mosaic} >= --epochs "
              f"{cfg.epochs} (set --close-mosaic lower to use it)", file=sys.stderr)
    if cfg.optimizer == "auto" and settings.lr0 is not None:
        print(f"warning: --optimizer auto chooses its own lr0 and momentum; --lr0 {settings.lr0} is ignored",
              file=sys.stderr)
    return settings, args.resume


def apply_cfg_file(parser: argparse.ArgumentParser, path: str) -> None:
    """Make the training settings in the yaml at ``path`` (:data:`CFG_KEYS`) ``parser``'s defaults, checked by the
    flags' own types (so the command line still wins); other keys, and keys set to null, are listed in one warning
    line on stderr. Bad files and values end with ``parser.error``."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        parser.error(f"--cfg {path}: {one_line(error)}")
    if not isinstance(values, dict):
        parser.error(f"--cfg {path}: expected a mapping of setting names to values")
    actions = {action.dest: action for action in parser._actions}
    defaults, ignored = {}, []
    for key, value in values.items():
        if key not in CFG_KEYS or value is None:
            ignored.append(str(key))
            continue
        action = actions[key]
        if action.type is None:  # --cos-lr / --no-cos-lr
            if not isinstance(value, bool):
                parser.error(f"--cfg {path}: {key}: {value!r} is not true or false")
            defaults[key] = value
            continue
        try:
            defaults[key] = action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError) as error:
            parser.error(f"--cfg {path}: {key}: {error}")
    if ignored:
        print(f"warning: --cfg {path}: {len(ignored)} keys are not training settings here and are ignored: "
              f"{', '.join(ignored)}", file=sys.stderr)
    parser.set_defaults(**defaults)


def start_model(settings: RunSettings, names: list[str]) -> tuple[YOLO, str]:
    """The model training starts from (from scratch: already with ``names``), and where it came from."""
    weights = settings.weights or (DEMO_DEFAULTS["weights"] if settings.demo else f"{settings.model or 'yolov8n'}.pt")
    if weights.lower() == "none":
        spec = settings.model or "yolov8n"
        return build_model(spec, names=names), f"{spec} from scratch (random initialisation, seed {settings.seed})"
    try:
        model = load_model(weights)
    except ConnectionError as error:
        raise ConnectionError(f"{error} Or train from scratch with --weights none.") from None
    if settings.model and Path(settings.model).stem not in (model.arch, Path(weights).stem):
        raise ValueError(f"--model {settings.model} does not match --weights {weights}, which holds {model.arch}; "
                         f"leave out --model")
    return model, f"{model.arch} from {weights}"


def checked_dataset(info: DatasetInfo, say: Say) -> DatasetInfo:
    """Check ``info`` (:func:`check_dataset`), say its table and problems; the dataset without unreadable files."""
    report = check_dataset(info)
    say(f"{info.format} dataset {info.root}: {info.nc} classes\n{format_report(report)}")
    return info.without(report.bad_paths)


def new_trainer(settings: RunSettings, dist: Distributed, say: Say = lambda _: None) -> Trainer:
    """Build the trainer of a new run: dataset, starting model aligned with its classes, plan, run folder (made
    last: a refused run leaves no folder). ``say`` gets the dataset table, the start and the freeze audit."""
    info = checked_dataset(resolve_dataset(settings.data), say)
    cfg = settings.config(info)
    if settings.optimizer == "auto":
        say(f"optimizer auto: {cfg.optimizer} with lr0 {cfg.lr0} and momentum {cfg.momentum} (args.yaml keeps them)")
    seed_everything(cfg.seed)
    model, origin = start_model(settings, info.names)
    if model.names != info.names:
        transfer = with_class_names(model, info.names)
        model = transfer.model
        origin += f"; classes changed to the dataset's {len(info.names)}: {transfer.message()}"
    plan = settings.plan(model)
    if settings.cache_frozen:  # refuse before the run folder exists; the trainer's own estimate is printed
        estimate_run_cache(model, plan, info.splits, cfg.imgsz, cfg.val_batch, settings.cache_frozen,
                           settings.cache_dtype, settings.project)
    name = settings.name or f"{info.root.name}-{model.arch}-freeze{'_'.join(settings.freeze).replace(':', '-')}"
    run_dir = dist.broadcast(new_run_dir(settings.project, name) if dist.main else None)
    device_name = settings.device or default_device()
    record = {**settings.to_dict(), "device": device_name, "arch": model.arch, "start": origin,
              "frozen_blocks": sorted(plan.frozen), "plan": plan.to_dict(), "run_dir": str(run_dir),
              "world_size": dist.world_size}
    say(f"model: {origin}\n{format_audit(plan.audit(model))}")
    return Trainer(model, info, cfg, run_dir, plan, device_name, settings.workers, settings.cache_images,
                   amp=settings.amp, settings=record, progress=sys.stderr.isatty(),
                   grad_norms=settings.grad_norms, cache_frozen=settings.cache_frozen,
                   cache_dtype=settings.cache_dtype, tensorboard=settings.board(),
                   channels_last=settings.channels_last, fold_frozen=settings.fold_frozen,
                   compile=settings.compile)


def resumed_trainer(run_dir: str | Path, dist: Distributed, device_name: str | None = None,
                    workers: int | None = None, say: Say = lambda _: None) -> Trainer:
    """Rebuild a killed run from its ``last.pt`` and restore its training state (``device_name`` and ``workers``
    may differ from the run's).

    Raises FileNotFoundError (no ``last.pt`` yet) or ValueError (no training state in it).
    """
    run_dir = Path(run_dir)
    last = run_dir / "weights" / "last.pt"
    if not last.is_file():
        raise FileNotFoundError(f"nothing to resume in {run_dir}: {last} does not exist (a run writes it after its "
                                f"first epoch)")
    ckpt = load_checkpoint(last)
    if "optimizer" not in ckpt.get("train", {}):
        raise ValueError(f"{last} holds no training state to resume from")
    state = ckpt["train"]
    record = dict(state["settings"])
    settings = RunSettings.from_dict(record)
    settings = dataclasses.replace(settings, device=device_name or record["device"],
                                   workers=settings.workers if workers is None else workers)
    record.update(device=settings.device, workers=settings.workers)
    cfg = TrainConfig(**state["config"])
    info = checked_dataset(resolve_dataset(settings.data), say)
    model = load_model(last)
    plan = FreezePlan.from_dict(record["plan"])
    say(f"resuming {run_dir} after epoch {state['epoch']} of {cfg.epochs}\n{plan.at(state['epoch']).describe(model)}")
    trainer = Trainer(model, info, cfg, run_dir, plan, settings.device, settings.workers, settings.cache_images,
                      amp=settings.amp, settings=record, progress=sys.stderr.isatty(),
                      grad_norms=settings.grad_norms, cache_frozen=settings.cache_frozen,
                      cache_dtype=settings.cache_dtype, tensorboard=settings.board(),
                      channels_last=settings.channels_last, fold_frozen=settings.fold_frozen,
                      compile=settings.compile)
    trainer.restore(ckpt)
    return trainer
