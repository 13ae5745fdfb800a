"""Where each strategy's detector looks (``python -m yolofreeze.study … --cam N``).

After training, ``N`` validation images are drawn (seeded, the same for every run of a dataset); each run's
``best.pt`` explains its top detection on each of them with Grad-CAM on the blocks the head reads
(:func:`yolofreeze.explain.cam.explain_image`). Per run, the number the report shows is the mean over the images of
the fraction of the map's mass inside the image's ground-truth boxes (``cam_energy_in_gt``; an image where the run
detects nothing counts 0); the maps go into one figure per dataset and model (:func:`yolofreeze.plots.plot_cam_grid`:
rows images, columns strategies).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from ..data import resolve_dataset
from ..data.records import ImageRecord
from ..explain.cam import energy_in_boxes, explain_image
from ..weights.checkpoints import load_model
from .keys import key, run_key

CAM_CONF = 0.001  # the top detection is explained whatever its score: a weak run still shows where it looks
CAM_SEED = 0


def pick_images(records: Sequence[ImageRecord], count: int, seed: int = CAM_SEED) -> list[ImageRecord]:
    """``count`` records drawn without replacement (all when fewer), the same for the same records and seed, in
    path order."""
    ordered = sorted(records, key=lambda r: str(r.path))
    chosen = random.Random(seed).sample(range(len(ordered)), min(count, len(ordered)))
    return [ordered[k] for k in sorted(chosen)]


def run_cams(run_dir: Path, images: Sequence[ImageRecord]) -> tuple[list[np.ndarray | None], float] | None:
    """The Grad-CAM map of ``run_dir``'s best model for its top detection on each image (None where it detects
    nothing) and the mean fraction of the maps' mass inside the ground-truth boxes; None without ``best.pt``."""
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        return None
    imgsz = int(yaml.safe_load((run_dir / "args.yaml").read_text(encoding="utf-8"))["imgsz"])
    model = load_model(best)
    maps, energies = [], []
    for record in images:
        explained = explain_image(model, record.path, imgsz, conf=CAM_CONF, max_det=1)
        cam = explained.maps[0] if explained.maps else None
        maps.append(cam)
        energies.append(energy_in_boxes(cam, record.boxes.tolist()) if cam is not None else 0.0)
    return maps, float(np.mean(energies)) if energies else float("nan")


def study_cams(rows: list[dict], runs: Sequence, study_dir: Path, count: int) -> dict[tuple[str, str], tuple]:
    """For each dataset and model: ``(images, {strategy: maps})`` of the first seed's runs, and each row's
    ``cam_energy_in_gt`` set (every seed). ``runs`` are the plan's ``StudyRun``s, ``rows`` the report's rows."""
    figures: dict[tuple[str, str], tuple] = {}
    images_of: dict[str, list[ImageRecord]] = {}
    first_seed = min(r.seed for r in runs)
    for run in runs:
        if run.data not in images_of:
            images_of[run.data] = pick_images(resolve_dataset(run.data).splits["val"], count)
        found = run_cams(study_dir / run.name, images_of[run.data])
        if found is None:
            continue
        maps, energy = found
        row = next(r for r in rows if key(r) == run_key(run))
        row["cam_energy_in_gt"] = energy
        if run.seed == first_seed:
            figures.setdefault(run_key(run)[:3], (images_of[run.data], {}))[1][run.strategy] = maps
    return figures
