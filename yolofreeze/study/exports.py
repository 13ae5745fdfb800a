"""Does freezing combine with quantisation? (``python -m yolofreeze.study … --export int8``, the layer-freezing
paper's open question 3, and its question 2 on a CPU: what each strategy's model costs at inference.)

After training, every run's ``best.pt`` is exported to ``weights/best.onnx`` and ``weights/best.int8.onnx``
(:func:`yolofreeze.deploy.measure.measure_int8`: static batch 1 at the run's ``imgsz``, INT8 calibrated on ``--calib``
train images) and both are measured the same way; the numbers are kept in the run's ``export.json`` (reused while
``best.pt`` and ``--calib`` are unchanged) and become the report's :data:`EXPORT_COLUMNS`
(:func:`yolofreeze.study.report.quantisation_verdict` reads them).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..deploy.measure import measure_int8
from ..weights.releases import sha256_of
from .keys import key, run_key
from .ledger import write_json

EXPORT_FILE = "export.json"
EXPORT_COLUMNS = ("fp32_map50_95", "int8_map50", "int8_map50_95", "int8_drop", "fp32_mb", "int8_mb", "fp32_ms_1",
                  "int8_ms_1", "fp32_ms_all", "int8_ms_all")


def run_export(run_dir: Path, data: str, calib: int) -> dict | None:
    """The export measurements of ``run_dir``'s ``best.pt`` (from ``export.json`` when it is up to date, else
    measured and written there); None without ``best.pt``."""
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        return None
    cached = run_dir / EXPORT_FILE
    if cached.is_file():
        found = json.loads(cached.read_text(encoding="utf-8"))
        if found.get("source_sha256") == sha256_of(best) and found.get("calib") == calib:
            return found
    imgsz = int(yaml.safe_load((run_dir / "args.yaml").read_text(encoding="utf-8"))["imgsz"])
    found = measure_int8(best, data, imgsz, run_dir / "weights", calib) | {"calib": calib}
    write_json(cached, found)
    return found


def study_exports(rows: list[dict], runs: Sequence, study_dir: Path, calib: int, say=print) -> None:
    """Set every row's :data:`EXPORT_COLUMNS` from its run's export (``runs``: the plan's ``StudyRun``s)."""
    for run in runs:
        say(f"export {run.name}: float32 and INT8 ONNX, measured")
        found = run_export(study_dir / run.name, run.data, calib)
        if found is None:
            continue
        row = next(r for r in rows if key(r) == run_key(run))
        row.update({column: found[column] for column in EXPORT_COLUMNS})
        row["export_threads"] = found["threads"]
