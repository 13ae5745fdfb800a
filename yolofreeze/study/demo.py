"""The offline miniature of the layer-freezing paper (``python -m yolofreeze.study --demo``).

A real transfer-learning experiment with nothing to download (minutes on a CPU: the README gives measured times):

1. **Source domain, pretraining** (once, then cached): yolov8n trained from scratch on the embedded ``demo``
   dataset (shapes under power lines on a grey sky; ``python train.py``'s run: 10 epochs at 160 px). Its best
   weights are kept as ``<datasets cache>/study-demo/source-yolov8n-v<N>.pt``.
2. **Target domain**: the ``field`` domain (:data:`yolofreeze.data.demo.FIELD`: rings, crosses and diamonds in
   other colours on a vegetation ground), generated deterministically into ``<datasets cache>/demo-field``.
3. **The study**: ``scratch, none, fr1, fr2, fr3, auto`` on the target, starting from the source weights (scratch:
   random), with the reference recipe at 160 px, batch 8, :data:`DEMO_EPOCHS` epochs, no early stopping; then the
   Grad-CAM maps of every run on :data:`DEMO_CAM_IMAGES` validation images.

Flags given on the command line win over these settings (``--epochs``, ``--strategies``, ``--imgsz`` …).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..data.demo import DEMO_VERSION, FIELD, demo_root, ensure_demo_dataset
from ..training.setup import TRAIN_MODULE
from .runner import STRATEGIES, flag_given

DEMO_MODEL = "yolov8n"
DEMO_EPOCHS = 8
DEMO_STRATEGIES = (*STRATEGIES, "auto")
DEMO_CAM_IMAGES = 4  # validation images whose class-activation maps the report draws per run
DEMO_TRAINER_FLAGS = {"--imgsz": "160", "--batch": "8", "--patience": "0"}


def cache_dir() -> Path:
    """Where the study demo keeps its source checkpoint: beside the demo dataset's folder."""
    return demo_root().parent / "study-demo"


def source_checkpoint(say: Callable[[str], None], python: str = sys.executable) -> Path:
    """The pretrained source-domain checkpoint, trained now (``train.py`` on the ``demo`` dataset) if not cached.

    Raises RuntimeError (with the end of the training output) when the pretraining run fails.
    """
    path = cache_dir() / f"source-{DEMO_MODEL}-v{DEMO_VERSION}.pt"
    if path.is_file():
        say(f"source model: {path} (pretrained on the sky domain, cached)")
        return path
    say(f"pretraining {DEMO_MODEL} from scratch on the generated sky domain (once; about 2 CPU minutes) …")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([python, "-m", TRAIN_MODULE, "--data", "demo", "--model", DEMO_MODEL, "--weights",
                               "none", "--project", tmp, "--name", "source"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pretraining on the demo dataset failed: {done.stderr.strip().splitlines()[-1:]}")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        shutil.copyfile(Path(tmp) / "source" / "weights" / "best.pt", partial)
        partial.replace(path)
    summary = [line for line in done.stdout.splitlines() if line.startswith("mAP@50:95")]
    say(f"source model: {path} ({summary[-1] if summary else 'trained'} on the sky domain's val split)")
    return path


def prepare_demo(args: argparse.Namespace, passthrough: list[str], say: Callable[[str], None] = lambda _: None
                 ) -> tuple[argparse.Namespace, list[str]]:
    """Fill in the demo's dataset, model, start weights and settings (given flags win); pretrain if needed."""
    if args.data:
        raise ValueError("--demo brings its own datasets; leave out --data")
    args.data = str(ensure_demo_dataset(demo_root().parent / "demo-field", FIELD))
    args.models = DEMO_MODEL if args.models in (None, DEMO_MODEL) else args.models
    if args.models != DEMO_MODEL:
        raise ValueError(f"--demo pretrains {DEMO_MODEL} only; leave out --models")
    args.weights = args.weights or str(source_checkpoint(say))
    args.epochs = args.epochs or DEMO_EPOCHS
    args.strategies = args.strategies or ",".join(DEMO_STRATEGIES)
    args.cam = DEMO_CAM_IMAGES if args.cam is None else args.cam
    args.name = args.name or "demo"
    if args.patience is None:
        args.patience = int(DEMO_TRAINER_FLAGS["--patience"])
    extra = [item for flag, value in DEMO_TRAINER_FLAGS.items()
             if not flag_given(passthrough, flag) and flag != "--patience" for item in (flag, value)]
    return args, passthrough + extra
