"""The study report: one row per run, read from its run folder, then ``study.csv``, ``study.md``, plots and the
paper's failure signatures.

What a row holds and where it comes from (each run folder is what ``train.py`` writes):

- ``summary.json`` (present once the run finished): the best epoch, its mAP@50, mAP@50:95 and per-class AP@50
  (pycocotools), the epochs run;
- ``results.csv``: time per epoch (mean of ``epoch_seconds``) and the training time (their sum), the training loss
  of the first and last epoch, mAP@50 per epoch (plots), the CUDA peak reserved memory (max over epochs);
- ``memory.json``: on CPU the peak memory is the step breakdown's estimate (parameters + gradients + optimiser
  state + saved activations; with ``--unfreeze`` of the phase that takes the most), on CUDA the measured peak
  reserved memory of training;
- ``freeze_audit.json``: frozen blocks and trainable parameters (at the end of training: with ``auto`` the
  prefix it ended with, and when each block froze: ``freezes``, e.g. ``0-3@6 0-8@7`` = blocks 0-3 frozen from
  epoch 6, 0-8 from epoch 7);
- ``grad_norms.csv``: the total gradient norm per step: mean, coefficient of variation, early mean, curves;
- ``export.json`` (with ``--export int8``, :mod:`yolofreeze.study.exports`): float32 and INT8 ONNX mAP, size and
  latency.

Failure signatures (:func:`diagnose`), after the layer-freezing paper:

- **capacity collapse**: mAP@50 stays near zero (best < ``COLLAPSE_MAP50``) while the training loss falls (last
  epoch below ``LOSS_FELL`` x the first): the trainable part cannot fit the task;
- **gradient starvation**: early in training (the first ``EARLY_FRACTION`` of fine-tuning's steps) the strategy's
  mean total gradient norm is below ``STARVATION_RATIO`` x fine-tuning's;
- **forgetting**: fine-tuning's mAP@50 is well below a frozen strategy's (below ``FORGETTING_RATIO`` x it and at
  least ``FORGETTING_GAP`` lower): updating everything lost what the frozen features kept.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..freezing.gradnorm import ALL, TOTAL, block_epoch_means, coefficient_of_variation, epoch_means, read_grad_norms
from ..freezing.plan import blocks_label
from ..plots import plot_cam_grid, plot_study, plot_study_blocks
from ..training.runs import read_results
from .cams import study_cams
from .exports import EXPORT_COLUMNS, study_exports
from .keys import key
from .runner import SCRATCH

COLLAPSE_MAP50 = 0.05
LOSS_FELL = 0.9
EARLY_FRACTION = 0.1
STARVATION_RATIO = 0.6
FORGETTING_RATIO = 0.9
FORGETTING_GAP = 0.02
FINE_TUNE = "none"
CSV_COLUMNS = ("dataset", "model", "augment", "strategy", "seed", "status", "frozen_blocks", "trainable_params", "map50", "map50_95",
               "peak_memory_mb", "memory_source", "memory_saving_pct", "epochs_run", "best_epoch", "epoch_seconds",
               "train_minutes", "grad_norm_mean", "grad_norm_cv", "grad_norm_cv_epochs", "flags", "freezes", "cam_energy_in_gt",
               *EXPORT_COLUMNS)


@dataclass
class Report:
    """What :func:`write_report` made: the rows, the markdown text and the plot files."""

    rows: list[dict]
    markdown: str
    plots: list[Path]


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def collect_row(dataset: str, model: str, strategy: str, run_dir: Path, seed: int = 0, augment: str = "none") -> dict:
    """One run's row (see the module docstring); ``status`` is ``finished``, ``unfinished`` or ``missing``, and
    values a run does not have yet are NaN. Series for the plots ride along under ``series``."""
    summary = _read_json(run_dir / "summary.json")
    row = {"dataset": dataset, "model": model, "strategy": strategy, "seed": seed, "augment": augment,
           "status": "finished" if summary else ("unfinished" if run_dir.is_dir() else "missing"),
           "frozen_blocks": "", "trainable_params": math.nan, "map50": math.nan, "map50_95": math.nan,
           "peak_memory_mb": math.nan, "memory_source": "", "memory_saving_pct": math.nan,
           "epochs_run": math.nan, "best_epoch": math.nan, "epoch_seconds": math.nan, "train_minutes": math.nan,
           "grad_norm_mean": math.nan, "grad_norm_cv": math.nan, "grad_norm_cv_epochs": math.nan, "flags": "", "freezes": "",
           "cam_energy_in_gt": math.nan, "ap50": {}, **dict.fromkeys(EXPORT_COLUMNS, math.nan),
           "series": {"epochs": [], "map50": [], "train_loss": [], "grad_steps": [], "grad_total": [],
                      "freeze_epochs": [], "freeze_steps": []}}
    audit = _read_json(run_dir / "freeze_audit.json")
    if audit:
        phases = audit.get("integrity", {}).get("phases")
        blocks = phases[-1]["frozen_blocks"] if phases else audit["frozen_blocks"]  # at the end of training
        row["frozen_blocks"] = blocks_label(blocks, separator=",")
        row["trainable_params"] = sum(b["params"] for b in audit["blocks"] if b["index"] not in blocks)
        freezes = [d for d in audit.get("decisions", []) if d["prefix_after"] > d["prefix_before"]]
        if audit.get("auto"):
            row["frozen_blocks"] = f"auto → {row['frozen_blocks']}"
            row["freezes"] = " ".join(f"0-{d['prefix_after'] - 1}@{d['epoch'] + 1}" for d in freezes) or "none"
        row["series"].update(freeze_epochs=[d["epoch"] + 1 for d in freezes],
                             freeze_steps=[d["step"] for d in freezes])
    if summary and summary["best"]:
        best = summary["best"]
        row.update(map50=best["map50"], map50_95=best["map50_95"], best_epoch=summary["best_epoch"],
                   epochs_run=summary["epochs_run"], ap50={c["name"]: c["ap50"] for c in best["per_class"]})
    results_path = run_dir / "results.csv"
    if results_path.is_file():
        results = read_results(results_path)
        seconds = results.get("epoch_seconds", [])
        losses = [sum(parts) for parts in zip(results["train/box_loss"], results["train/cls_loss"],
                                              results["train/dfl_loss"])]
        row["series"].update(epochs=results["epoch"], map50=results["metrics/mAP50(B)"], train_loss=losses)
        if seconds:
            row.update(epoch_seconds=float(np.mean(seconds)), train_minutes=float(np.sum(seconds)) / 60)
        reserved = [v for v in results.get("memory/cuda_reserved_mb", []) if math.isfinite(v)]
        if reserved:
            row.update(peak_memory_mb=max(reserved), memory_source="CUDA peak reserved")
    memory = _read_json(run_dir / "memory.json")
    if memory and not row["memory_source"]:
        row.update(peak_memory_mb=memory["estimated_total_bytes"] / 2**20, memory_source="step estimate")
    norms_path = run_dir / "grad_norms.csv"
    if norms_path.is_file():
        norms = read_grad_norms(norms_path)
        totals = [(r["step"], r["epoch"], r["norm"]) for r in norms
                  if r["block"] == ALL and r["part"] == TOTAL and math.isfinite(r["norm"])]
        row["series"]["block_norms"] = block_epoch_means(norms)
        if totals:
            steps, epochs, values = zip(*totals)
            row.update(grad_norm_mean=float(np.mean(values)), grad_norm_cv=coefficient_of_variation(values),
                       grad_norm_cv_epochs=coefficient_of_variation(epoch_means(epochs, values)))
            row["series"].update(grad_steps=list(steps), grad_total=list(values))
    return row


def fine_tuning_of(row: dict, rows: list[dict]) -> dict | None:
    """The fine-tuning (``none``) row of the same dataset, model, augmentation and seed."""
    return next((r for r in rows if key(r) == (*key(row)[:3], FINE_TUNE, row.get("seed", 0))), None)


def groups(rows: list[dict]) -> list[tuple[str, str, str, list[dict]]]:
    """``(dataset, model, augment, rows)`` per group of the report, in the rows' order."""
    found = dict.fromkeys(key(r)[:3] for r in rows)
    return [(*triple, [r for r in rows if key(r)[:3] == triple]) for triple in found]


def group_title(dataset: str, model: str, augment: str) -> str:
    return f"{dataset} · {model}" + ("" if augment == "none" else f" · augment {augment}")


def group_tag(dataset: str, model: str, augment: str) -> str:
    """The file-name part of a group: ``<dataset>_<model>``, then ``_aug-<preset>`` for augmented runs."""
    return f"{dataset}_{model}" + ("" if augment == "none" else f"_aug-{augment}")


def add_savings(rows: list[dict]) -> None:
    """``memory_saving_pct``: how much less peak memory than fine-tuning (``none``) of the same dataset, model and
    seed, in % (negative: more)."""
    for row in rows:
        reference = fine_tuning_of(row, rows)
        if reference and reference["peak_memory_mb"] > 0 and math.isfinite(row["peak_memory_mb"]):
            row["memory_saving_pct"] = 100 * (1 - row["peak_memory_mb"] / reference["peak_memory_mb"])


def _early_mean(totals: Sequence[float], steps: int) -> float:
    return float(np.mean(totals[:steps])) if len(totals) >= 1 else math.nan


def diagnose(rows: list[dict]) -> dict[tuple[str, str, str, int], list[str]]:
    """The failure signatures of each run, keyed by ``(dataset, model, strategy, seed)`` (empty lists for healthy
    runs).

    Uses ``map50``, ``series.train_loss`` and ``series.grad_total`` of the rows; fine-tuning (``none``) of the same
    dataset, model and seed is the reference for starvation and forgetting.
    """
    flags = {key(r): [] for r in rows}
    for row in rows:
        losses = row["series"]["train_loss"]
        if (math.isfinite(row["map50"]) and row["map50"] < COLLAPSE_MAP50 and len(losses) >= 2
                and losses[-1] < LOSS_FELL * losses[0]):
            flags[key(row)].append(f"capacity collapse: mAP50 {row['map50']:.3f} while the training loss fell "
                              f"{losses[0]:.2f} -> {losses[-1]:.2f}")
        reference = fine_tuning_of(row, rows)
        if reference is None or reference is row:
            continue
        ref_totals, totals = reference["series"]["grad_total"], row["series"]["grad_total"]
        if ref_totals and totals:
            steps = max(1, round(EARLY_FRACTION * len(ref_totals)))
            ratio = _early_mean(totals, steps) / _early_mean(ref_totals, steps)
            if ratio < STARVATION_RATIO:
                flags[key(row)].append(f"gradient starvation: early gradient norm {ratio:.2f}x fine-tuning's "
                                  f"(first {steps} steps)")
        if (math.isfinite(row["map50"]) and math.isfinite(reference["map50"]) and row["strategy"] != "scratch"
                and reference["map50"] < FORGETTING_RATIO * row["map50"]
                and row["map50"] - reference["map50"] >= FORGETTING_GAP):
            flags[key(reference)].append(
                f"forgetting: fine-tuning mAP50 {reference['map50']:.3f} below {row['strategy']}'s "
                f"{row['map50']:.3f}")
    return flags


def _cell(value, digits: int = 3) -> str:
    if isinstance(value, str):
        return value or "-"
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def format_markdown(rows: list[dict], study_dir: Path) -> str:
    """``study.md``: per dataset and model the strategy table, the per-class AP@50 table and the flags."""
    lines = [f"# Study {study_dir.name}", "",
             "mAP from pycocotools on the val split at the best epoch (fitness 0.1 mAP50 + 0.9 mAP50-95). Peak "
             "memory: CUDA peak reserved over training on a GPU, else the measured step breakdown (parameters + "
             "gradients + optimiser state + saved activations). Saving: less peak memory than fine-tuning (none). "
             "Gradient norm: total L2 norm per optimiser step before clipping; its mean, and its coefficient of variation "
             "(std / mean) two ways: CV steps over every step (mini-batch noise and trend), CV epochs over the "
             "per-epoch means (the trend across training; this project's reading of the layer-freezing paper's CV). "
             "Frozen blocks and trainable parameters at the end of training; auto: the prefix it ended with, and "
             "when each prefix froze (0-3@6: blocks 0-3 frozen from epoch 6).",
             ""]
    missing = sum(r["status"] != "finished" for r in rows)
    if missing:
        lines += [f"**{missing} of {len(rows)} runs are still missing** (not finished: their rows are empty; "
                  f"`python -m yolofreeze.study --status {study_dir}` says where each one is).", ""]
    for dataset, model, augment, group in groups(rows):
        seeds = list(dict.fromkeys(r["seed"] for r in group))
        lines += [f"## {group_title(dataset, model, augment)}", ""]
        if len(seeds) > 1:
            lines += format_over_seeds(group, seeds) + ["", "Each run:", ""]
        lines += ["| strategy | frozen blocks | trainable params | mAP50 | mAP50-95 | peak memory MiB | saving | "
                  "epochs (best) | s/epoch | train min | grad norm mean | CV steps | CV epochs | status |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in group:
            saving = (f"{round(r['memory_saving_pct'], 1) + 0.0:.1f}%"  # + 0.0: never "-0.0%"
                      if math.isfinite(r["memory_saving_pct"]) else "-")
            epochs = "-" if not math.isfinite(float(r["epochs_run"])) else f"{r['epochs_run']} ({r['best_epoch']})"
            frozen = _cell(r["frozen_blocks"]) + (f" ({r['freezes']})" if r["freezes"] else "")
            lines.append(f"| {_run_label(r, seeds)} | {frozen} | {_cell(r['trainable_params'])} | "
                         f"{_cell(r['map50'])} | {_cell(r['map50_95'])} | {_cell(r['peak_memory_mb'], 1)} | "
                         f"{saving} | {epochs} | {_cell(r['epoch_seconds'], 1)} | {_cell(r['train_minutes'], 1)} | "
                         f"{_cell(r['grad_norm_mean'], 2)} | {_percent(r['grad_norm_cv'])} | "
                         f"{_percent(r['grad_norm_cv_epochs'])} | {r['status']} |")
        classes = list(dict.fromkeys(name for r in group for name in r["ap50"]))
        if classes:
            lines += ["", "AP@50 per class:", "", "| strategy | " + " | ".join(classes) + " |",
                      "|---|" + "---:|" * len(classes)]
            lines += [f"| {_run_label(r, seeds)} | " + " | ".join(_cell(r["ap50"].get(c, math.nan))
                                                                 for c in classes) + " |" for r in group]
        cams = [r for r in group if math.isfinite(r["cam_energy_in_gt"])]
        if cams:
            lines += ["", "Where the detector looks: the share of the Grad-CAM map of each run's top detection "
                          "inside the ground-truth boxes, mean over the --cam images (0 where nothing was "
                          "detected):", "", "| strategy | CAM mass in ground truth |", "|---|---:|"]
            lines += [f"| {_run_label(r, seeds)} | {r['cam_energy_in_gt']:.3f} |" for r in cams]
        lines += format_exports(group, seeds)
        flagged = [(_run_label(r, seeds), flag) for r in group for flag in r["flags"].split("; ") if flag]
        lines += ["", "Diagnostics: " + ("none of the paper's failure signatures." if not flagged else "")]
        lines += [f"- **{strategy}**: {flag}" for strategy, flag in flagged]
        lines.append("")
    lines += format_augment_comparison(rows)
    return "\n".join(lines)


def format_augment_comparison(rows: list[dict]) -> list[str]:
    """Per dataset and model with runs under several ``--augment`` presets: each strategy's mAP50 and mAP50-95 (mean
    ± std over seeds) under each, and the difference to ``none``, marked ``*`` beyond the two stds added."""
    lines = []
    for dataset, model in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        pair = [r for r in rows if (r["dataset"], r["model"]) == (dataset, model)]
        augments = list(dict.fromkeys(r.get("augment", "none") for r in pair))
        if len(augments) < 2 or "none" not in augments:
            continue
        others = [a for a in augments if a != "none"]
        lines += [f"## {dataset} · {model}: with and without augmentation", "",
                  "mean ± sample std over seeds; Δ: against the same strategy without augmentation (`*`: beyond the "
                  "two stds added)", "",
                  "| strategy | metric | none | " + " | ".join(f"{a} | Δ {a}" for a in others) + " |",
                  "|---|---|---:|" + "---:|---:|" * len(others)]
        for strategy in dict.fromkeys(r["strategy"] for r in pair):
            for metric in ("map50", "map50_95"):
                values = {a: mean_std([r[metric] for r in pair if r["strategy"] == strategy and
                                       r.get("augment", "none") == a]) for a in augments}
                cells = []
                for a in others:
                    delta = values[a][0] - values["none"][0]
                    marked = "*" if abs(delta) > values[a][1] + values["none"][1] else ""
                    cells += [_pm(values[a]), f"{delta:+.3f}{marked}" if math.isfinite(delta) else "-"]
                lines.append(f"| {strategy} | {metric.replace('map', 'mAP').replace('_', '-')} | "
                             f"{_pm(values['none'])} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _run_label(row: dict, seeds: list[int]) -> str:
    """The strategy, with the seed when the study has several."""
    return row["strategy"] + (f" (seed {row['seed']})" if len(seeds) > 1 else "")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of the finite ``values``; NaN, NaN for none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def format_over_seeds(group: list[dict], seeds: list[int]) -> list[str]:
    """The table of one dataset and model over ``seeds``: per strategy the mean ± std of mAP50, mAP50-95 and the
    gradient-norm CVs (over steps and over epochs), the mean training minutes, and mAP50's difference to fine-tuning's mean, marked ``*`` when it
    exceeds the spread (larger than the two standard deviations added)."""
    lines = [f"Over seeds {', '.join(map(str, seeds))} (mean ± sample std; `*`: the mAP50 difference to none exceeds "
             f"the two strategies' std added, i.e. more than the seeds' spread):", "",
             "| strategy | runs | mAP50 | mAP50-95 | vs none mAP50 | train min | CV steps | CV epochs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    by_strategy = {s: [r for r in group if r["strategy"] == s] for s in dict.fromkeys(r["strategy"] for r in group)}
    reference = mean_std([r["map50"] for r in by_strategy.get(FINE_TUNE, [])])
    for strategy, runs in by_strategy.items():
        map50, map50_95 = mean_std([r["map50"] for r in runs]), mean_std([r["map50_95"] for r in runs])
        cv = mean_std([100 * r["grad_norm_cv"] for r in runs])
        cv_epochs = mean_std([100 * r["grad_norm_cv_epochs"] for r in runs])
        minutes = mean_std([r["train_minutes"] for r in runs])[0]
        difference = "-"
        if strategy != FINE_TUNE and math.isfinite(map50[0]) and math.isfinite(reference[0]):
            delta = map50[0] - reference[0]
            difference = f"{delta:+.3f}{'*' if abs(delta) > map50[1] + reference[1] else ''}"
        finished = sum(r["status"] == "finished" for r in runs)
        lines.append(f"| {strategy} | {finished}/{len(runs)} | {_pm(map50)} | {_pm(map50_95)} | {difference} | "
                     f"{_cell(minutes, 1)} | {_pm(cv, 0, '%')} | {_pm(cv_epochs, 0, '%')} |")
    return lines


def format_exports(group: list[dict], seeds: list[int]) -> list[str]:
    """The deployment table of one dataset and model (``--export int8``; nothing without it) and
    :func:`quantisation_verdict`."""
    exported = [r for r in group if math.isfinite(r["int8_map50_95"])]
    if not exported:
        return []
    threads = exported[0].get("export_threads", "all")
    lines = ["", f"Deployment (--export int8): each run's best.pt as a static batch-1 ONNX model in onnxruntime, "
                 f"float32 and INT8 (QDQ, calibrated on train images, decode in float); mAP on the val split with a "
                 f"square letterbox (what a static export takes); drop = float32 minus INT8 mAP50-95; median ms "
                 f"per image, forward only, on 1 thread and on {threads}:", "",
             "| strategy | fp32 mAP50-95 | INT8 mAP50 | INT8 mAP50-95 | drop | fp32 MB | INT8 MB | fp32 ms (1) | "
             "INT8 ms (1) | fp32 ms (all) | INT8 ms (all) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {_run_label(r, seeds)} | {r['fp32_map50_95']:.3f} | {r['int8_map50']:.3f} | "
              f"{r['int8_map50_95']:.3f} | {r['int8_drop']:+.4f} | {r['fp32_mb']:.1f} | {r['int8_mb']:.1f} | "
              f"{r['fp32_ms_1']:.1f} | {r['int8_ms_1']:.1f} | {r['fp32_ms_all']:.1f} | {r['int8_ms_all']:.1f} |"
              for r in exported]
    return lines + ["", quantisation_verdict(exported)]


def quantisation_verdict(group: list[dict]) -> str:
    """One sentence per dataset and model: each frozen strategy's INT8 mAP@50:95 drop (mean over seeds) against
    fine-tuning's, called better or worse only when the difference exceeds the two strategies' seed std added."""
    drops: dict[str, list[float]] = {}
    for row in group:
        drops.setdefault(row["strategy"], []).append(row["int8_drop"])
    if FINE_TUNE not in drops:
        return f"Quantisation: no INT8 result of fine-tuning ({FINE_TUNE}) to compare with."
    reference = mean_std(drops[FINE_TUNE])
    calls = []
    for strategy, values in drops.items():
        if strategy in (FINE_TUNE, SCRATCH):
            continue
        mean, std = mean_std(values)
        gap = mean - reference[0]
        calls.append((strategy, mean, "within the spread" if abs(gap) <= std + reference[1] else
                      "worse" if gap > 0 else "better"))
    head = (f"Quantisation: INT8 loses {reference[0]:+.4f} mAP50-95 against float32 with fine-tuning ({FINE_TUNE})"
            + ("" if len(drops[FINE_TUNE]) == 1 else f", mean over {len(drops[FINE_TUNE])} seeds"))
    if not calls:
        return head + "; no frozen strategy to compare with."
    better = [s for s, _, word in calls if word == "better"]
    worse = [s for s, _, word in calls if word == "worse"]
    verdict = ("the frozen strategies quantise better than fine-tuning" if better and not worse else
               "the frozen strategies quantise worse than fine-tuning" if worse and not better else
               f"mixed: better {', '.join(better)}; worse {', '.join(worse)}" if better else
               "no frozen strategy quantises differently from fine-tuning beyond the seeds' spread")
    one_seed = " (one seed: no spread, so any difference counts)" if len(drops[FINE_TUNE]) == 1 else ""
    return (f"{head}; " + ", ".join(f"{s} {m:+.4f} ({word})" for s, m, word in calls)
            + f": {verdict}{one_seed}.")


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.0f}%" if math.isfinite(fraction) else "-"


def _pm(pair: tuple[float, float], digits: int = 3, unit: str = "") -> str:
    mean, std = pair
    return "-" if not math.isfinite(mean) else f"{mean:.{digits}f}{unit} ± {std:.{digits}f}{unit}"


def write_csv(rows: list[dict], path: Path) -> None:
    """``study.csv``: :data:`CSV_COLUMNS`, then ``ap50/<class>`` per class."""
    classes = list(dict.fromkeys(name for r in rows for name in r["ap50"]))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*CSV_COLUMNS, *(f"ap50/{c}" for c in classes)])
        for r in rows:
            writer.writerow([r[c] if not isinstance(r[c], float) else f"{r[c]:.6g}" for c in CSV_COLUMNS]
                            + [f"{r['ap50'][c]:.6g}" if c in r["ap50"] else "" for c in classes])


def write_report(runs: Sequence, study_dir: Path, cam: int = 0, calib: int | None = None, say=print) -> Report:
    """Collect every run of the plan (``StudyRun``-like: ``dataset``, ``model``, ``strategy``, ``seed``, ``name``),
    flag the failure signatures, write ``study.csv``, ``study.md`` and per pair ``study_<dataset>_<model>.png`` and
    ``study_<dataset>_<model>_blocks.png`` (per-block gradient heat maps);
    with ``cam`` images, the class-activation maps of every run (:mod:`yolofreeze.study.cams`): the
    ``cam_energy_in_gt`` column and one ``cams_<dataset>_<model>.png`` per pair; with ``calib`` (``--export int8``)
    every run's float32 and INT8 ONNX exports, measured (:mod:`yolofreeze.study.exports`, calibrated on ``calib``
    train images)."""
    rows = [collect_row(run.dataset, run.model, run.strategy, study_dir / run.name, getattr(run, "seed", 0),
                        getattr(run, "augment", "none")) for run in runs]
    add_savings(rows)
    figures = study_cams(rows, runs, study_dir, cam) if cam else {}
    if calib:
        study_exports(rows, runs, study_dir, calib, say)
    for found, flags in diagnose(rows).items():
        row = next(r for r in rows if key(r) == found)
        row["flags"] = "; ".join(flags)
    write_csv(rows, study_dir / "study.csv")
    markdown = format_markdown(rows, study_dir)
    (study_dir / "study.md").write_text(markdown + "\n", encoding="utf-8")
    plots = []
    for dataset, model, augment, group in groups(rows):
        seeds = list(dict.fromkeys(r["seed"] for r in group))
        shown = [r for r in group if r["seed"] == seeds[0]]  # one seed's curves; study.md has the spread
        title = group_title(dataset, model, augment) + (f" (seed {seeds[0]} of {len(seeds)})" if len(seeds) > 1
                                                        else "")
        tag = group_tag(dataset, model, augment)
        plots.append(plot_study(shown, study_dir / f"study_{tag}.png", title))
        plots.append(plot_study_blocks(shown, study_dir / f"study_{tag}_blocks.png", title))
        if (dataset, model, augment) in figures:
            images, maps = figures[(dataset, model, augment)]
            plots.append(plot_cam_grid(images, maps, study_dir / f"cams_{tag}.png", title))
    return Report(rows, markdown, plots)
