"""Shared pytest fixtures: the workplace's real test data, the pinned oracle's version, a trained oracle checkpoint."""
from __future__ import annotations

import hashlib
import os
import re
from importlib import metadata
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def pinned_oracle_version() -> str:
    """The exact ultralytics version requirements-dev.txt pins (``ultralytics==X``)."""
    text = (PROJECT_ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    match = re.search(r"^ultralytics==(\S+)", text, re.MULTILINE)
    return match.group(1) if match else "not pinned"


def installed_oracle_version() -> str:
    try:
        return metadata.version("ultralytics")
    except metadata.PackageNotFoundError:
        return "not installed"


def pytest_report_header(config) -> str:
    return (f"oracle: ultralytics {installed_oracle_version()} (pinned: {pinned_oracle_version()}); "
            f"real data: {SHARED_DATA if SHARED_DATA.is_dir() else 'absent'}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout.

    Absent outside the workplace: the test is skipped with the reason, except under ``CI=true``, where
    CI always has it and its absence is a failure.
    """
    if not SHARED_DATA.is_dir():
        reason = f"real test data not found at {SHARED_DATA}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}: CI must have ../shared/data beside the checkout")
        pytest.skip(f"{reason} (present in the workplace and in CI)")
    return SHARED_DATA


# The recipe of the oracle-trained checkpoint; part of its cache key, so a change retrains.
CPLID_RECIPE = dict(model="yolov8n.yaml", epochs=30, imgsz=256, batch=4, optimizer="AdamW", lr0=0.002,
                    warmup_epochs=1, close_mosaic=3, seed=0, deterministic=True, workers=0, device="cpu", amp=False,
                    val=False, plots=False)


@pytest.fixture(scope="session")
def cplid_oracle_weights(request, shared_data) -> Path:
    """A YOLOv8n the oracle trained from scratch on cplid-dev (2 classes: insulator, defect), official format.

    A checkpoint with real signal (its scores follow the image content, so detections cannot tie the way
    random weights' do over grey padding). Trained once (a few CPU minutes) and kept in the pytest cache,
    keyed by the oracle's version and the recipe.
    """
    from oracle import ultralytics

    ul = ultralytics()
    key = hashlib.sha256(repr(sorted(CPLID_RECIPE.items())).encode()).hexdigest()[:10]
    folder = Path(request.config.cache.mkdir(f"cplid-oracle-{ul.__version__}-{key}"))
    weights = folder / "cplid-yolov8n.pt"
    if weights.is_file():
        return weights
    data = folder / "data.yaml"
    data.write_text(f"path: {shared_data / 'cplid-dev'}\ntrain: images/train\nval: images/val\n"
                    "names:\n  0: insulator\n  1: defect\n")
    recipe = dict(CPLID_RECIPE)
    trainer = ul.YOLO(recipe.pop("model"))
    trainer.train(data=str(data), project=str(folder), name="run", exist_ok=True, verbose=False, **recipe)
    (folder / "run" / "weights" / "last.pt").replace(weights)
    return weights


# The recipe of the demo-trained checkpoint (our trainer, train.py's flags); part of its cache key.
DEMO_RECIPE = ("--model", "yolov8n", "--weights", "none", "--epochs", "10", "--imgsz", "160", "--batch", "8",
               "--workers", "0", "--seed", "0")


@pytest.fixture(scope="session")
def demo_trained(request) -> tuple[Path, Path]:
    """``(best.pt, data.yaml)``: a yolov8n our trainer trained from scratch on the demo dataset, ``python train.py``'s
    run (mAP50 about 0.9 on its 64 val images): strong, real signal where a comparison needs one (INT8 against
    float32). Trained once (about 2 CPU minutes) and kept in the pytest cache, keyed by the recipe."""
    import contextlib
    import io
    import shutil
    import tempfile

    import train as train_cli
    from yolofreeze.data import write_demo_dataset

    key = hashlib.sha256(repr(DEMO_RECIPE).encode()).hexdigest()[:10]  # a new recipe: a new folder
    folder = Path(request.config.cache.mkdir(f"demo-trained-{key}"))
    data = folder / "demo" / "data.yaml"
    if not data.is_file():
        write_demo_dataset(folder / "demo")
    weights = folder / "demo-yolov8n.pt"
    if not weights.is_file():
        with tempfile.TemporaryDirectory() as project, contextlib.redirect_stdout(io.StringIO()):
            code = train_cli.main(["--data", str(data), *DEMO_RECIPE, "--project", project, "--name", "run"])
            assert code == 0, "training the demo checkpoint failed"
            shutil.copyfile(Path(project) / "run" / "weights" / "best.pt", weights)
    return weights, data
