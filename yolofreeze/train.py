"""Fine-tune a YOLOv8/YOLOv10 detector with layer freezing: ``python train.py --data insplad --freeze 9``
(the same command as ``python -m yolofreeze.train``, which the study runs).

With no arguments it trains yolov8n from scratch on the embedded ``demo`` dataset (offline, a few CPU minutes).
Otherwise the start is the official COCO-pretrained checkpoint of ``--model`` (``--weights none``: from scratch),
with the reference's recipe and SGD (lr 0.01 → 0.0001, momentum 0.937, nominal batch 64, 3 warm-up epochs) and no
augmentation, the layer-freezing paper's protocol (``--optimizer``, ``--augment`` and every hyper-parameter flag,
or ``--cfg args.yaml``, change it). Writes runs/train/<name>/: weights/{last,best}.pt, results.csv, results.png, args.yaml,
freeze_audit.json (what was frozen, with integrity digests), memory.json (one step's memory breakdown),
grad_norms.csv and grad_norms.png (per-step gradient L2 norms per block, part and in total).
``--resume runs/train/<name>`` continues a killed run. Multi-GPU: ``torchrun --nproc_per_node N train.py …``.
``--cache-frozen ram|disk`` (frozen blocks a prefix, their batch-norm in eval) computes the frozen blocks' outputs
once and trains from the first trainable block. ``--freeze auto`` starts with nothing frozen (``auto:fr1``: with a
prefix) and freezes the leading blocks whose gradients stopped changing (``--auto-interval``, ``--auto-max``,
``--auto-threshold``); with ``--cache-frozen`` each freeze makes the following epochs cheaper.
"""
from __future__ import annotations

import logging
import sys

from .cli import default_device, entry_point
from .evaluation.evaluate import format_result
from .freezing.auto import format_decisions
from .freezing.gradnorm import format_grad_norm_summary
from .freezing.memory import format_plan_memory
from .freezing.plan import FrozenTensorChanged
from .training.optim import accumulate
from .training.setup import AUGMENT_FLAGS, new_trainer, parse_train_args, resumed_trainer, train_parser
from .training.stopping import TrainingInterrupted
from .training.trainer import Distributed, TrainingDiverged, TrainSummary
from .weights.checkpoints import CheckpointWriteError

EXIT_TRAINING_FAILED = 1  # diverged, a frozen tensor moved, a checkpoint could not be written


def print_summary(summary: TrainSummary, auto: bool = False, tensorboard: bool = False) -> None:
    """The one-screen end of a run: best epoch, its per-class table, gradient norms, (``auto``) when blocks froze,
    time, where the files are (``tensorboard``: and how to view its event files)."""
    how = "stopped early (patience)" if summary.stopped_early else "finished"
    print(f"\n{how} after {summary.epochs_run} epochs in {summary.seconds / 60:.1f} min; best epoch "
          f"{summary.best_epoch} (fitness {summary.best_fitness:.4f} = 0.1 mAP50 + 0.9 mAP50-95)")
    if summary.best is not None:
        print(format_result(summary.best))
    if summary.grad_norms:
        print(format_grad_norm_summary(summary.grad_norms))
    if auto:
        print(format_decisions(summary.freezes))
    if summary.unreadable:
        print(f"{len(summary.unreadable)} training images could not be read and were skipped: "
              f"{', '.join(summary.unreadable[:5])}")
    plots = ", grad_norms.csv, grad_norms.png" if summary.grad_norms else ""
    print(f"results: {summary.run_dir}/results.csv, results.png{plots}, freeze_audit.json, memory.json; weights: "
          f"{summary.run_dir}/weights/best.pt (and last.pt)")
    if tensorboard:
        print(f"TensorBoard: tensorboard --logdir {summary.run_dir.parent}")


@entry_point
def main(argv: list[str] | None = None) -> int:
    settings, resume = parse_train_args(argv, train_parser("train.py", __doc__))
    dist = Distributed.from_env(settings.device or default_device())
    logging.basicConfig(level=logging.INFO if dist.main else logging.WARNING, format="%(message)s")
    logging.getLogger("yolofreeze.data").setLevel(logging.WARNING)
    say = print if dist.main else (lambda _: None)
    if resume:
        trainer = resumed_trainer(resume, dist, settings.device, settings.workers, say)
    else:
        trainer = new_trainer(settings, dist, say)
    if dist.main:
        if trainer.cache_estimate is not None:
            print(trainer.cache_estimate.describe())
        if not resume:
            print(format_plan_memory(trainer.profile_memory()))
            print(trainer.loader_memory()["note"])
        cfg = trainer.cfg
        print(f"training {cfg.epochs} epochs on {len(trainer.data.splits['train'])} images "
              f"({trainer.nb} batches of {cfg.batch // dist.world_size}"
              f"{f' per process x {dist.world_size}' if dist.world_size > 1 else ''}, one {cfg.optimizer} "
              f"step per {accumulate(cfg)} batches{_augmentation(cfg)}), imgsz {cfg.imgsz}, {trainer.device}{_precision(trainer)}; "
              f"run folder {trainer.run_dir}")
    try:
        summary = trainer.fit()
    except (TrainingDiverged, FrozenTensorChanged, CheckpointWriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    except TrainingInterrupted as error:
        print(f"stopped: {error}", file=sys.stderr)
        return error.exit_code
    if dist.main:
        print_summary(summary, auto=trainer.freeze_plan.auto is not None, tensorboard=trainer.board is not None)
    return 0


def _precision(trainer) -> str:
    """``, AMP float16`` / ``, AMP bfloat16`` with mixed precision, or nothing."""
    return f", AMP {str(trainer.amp_dtype).removeprefix('torch.')}" if trainer.amp else ""


def _augmentation(cfg) -> str:
    """``, augmented: …`` naming the active augmentation settings, or nothing."""
    active = [f"{name} {getattr(cfg, name)}" for name in AUGMENT_FLAGS if getattr(cfg, name)]
    return f"; augmented: {', '.join(active)}" if active else ""


if __name__ == "__main__":
    raise SystemExit(main())
