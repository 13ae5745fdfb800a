"""The study's runs: the plan (:func:`plan_study`: every dataset x model x strategy x seed) → one training process per
run (``python -m yolofreeze.train``), in ``runs/study/<name>/<dataset>-<model>-<strategy>[-s<seed>]/`` (seed 0 has
no suffix; :func:`run_one`; a
finished run, marked by its ``summary.json``, is skipped; a killed one continues from its ``last.pt``; one that never
finished an epoch starts over) → the report (:mod:`yolofreeze.study.report`: ``study.csv``, ``study.md``, plots,
diagnostics). Runs go one at a time, or one per GPU (group) at a time with ``--devices`` (:func:`run_study`). The
command is :mod:`yolofreeze.study.__main__`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

from ..data.augment import PRESETS as AUGMENT_PRESETS
from ..freezing.plan import AUTO, PRESETS
from ..training.setup import TRAIN_MODULE
from ..weights.releases import download_weights, official_name
from .ledger import RunLocked, owner, record_state, run_lock

STRATEGIES = ("scratch", "none", "fr1", "fr2", "fr3")  # the layer-freezing paper's
SCRATCH = "scratch"
AUTO_FLAGS = ("--auto-interval", "--auto-max", "--auto-threshold", "--auto-warmup")
FINISHED = "summary.json"


def dataset_label(spec: str) -> str:
    """A short name for a ``--data`` value: the name itself (``insplad``), a folder's name, or a data.yaml's
    folder's name."""
    path = Path(spec)
    return path.resolve().parent.name if path.suffix in (".yaml", ".yml") else path.name


@dataclass(frozen=True)
class StudyRun:
    """One combination of the study: where it trains and with which ``train.py`` arguments."""

    data: str
    model: str
    strategy: str
    weights: str  # the pretrained start ("none" for scratch)
    seed: int = 0
    augment: str = "none"  # the --augment preset of the run (a study axis)

    @property
    def dataset(self) -> str:
        """The dataset's short name (:func:`dataset_label`)."""
        return dataset_label(self.data)

    @property
    def name(self) -> str:
        """The run folder's name: ``<dataset>-<model>-<strategy>``, then ``-aug`` (``--augment default``) or
        ``-aug-<preset>`` for an augmented run, then ``-s<seed>`` for a seed other than 0."""
        augmented = "" if self.augment == "none" else "-aug" if self.augment == "default" else f"-aug-{self.augment}"
        return f"{self.dataset}-{self.model}-{self.strategy}{augmented}" + (f"-s{self.seed}" if self.seed else "")

    @property
    def freeze(self) -> str:
        """The ``--freeze`` value (scratch freezes nothing)."""
        return "none" if self.strategy == SCRATCH else self.strategy

    def train_args(self, study_dir: Path, common: Sequence[str]) -> list[str]:
        """``train.py`` arguments of a new run of this combination (a run with nothing frozen has no frozen
        prefix to cache: ``--cache-frozen`` and ``--cache-dtype`` are left out of it; the ``--auto-*`` flags go to
        the ``auto`` run only; an augmented run has its ``--augment`` and no frozen-prefix cache: its images change
        every epoch)."""
        if self.freeze == "none" or self.augment != "none":
            common = without_flags(common, ("--cache-frozen", "--cache-dtype"))
        if self.freeze != AUTO:
            common = without_flags(common, AUTO_FLAGS)
        return [*common, "--model", self.model, "--weights", self.weights, "--data", self.data, "--freeze",
                self.freeze, "--seed", str(self.seed), "--augment", self.augment, "--project", str(study_dir),
                "--name", self.name]  # last: the study's values win


def flag_given(tokens: Sequence[str], flag: str) -> bool:
    """Whether ``flag`` is among command-line ``tokens``, as ``--flag value`` or ``--flag=value``."""
    return any(token == flag or token.startswith(flag + "=") for token in tokens)


def without_flags(tokens: Sequence[str], flags: Sequence[str]) -> list[str]:
    """``tokens`` without ``flags`` and their values (``--flag value`` or ``--flag=value``)."""
    kept, skip_value = [], False
    for token in tokens:
        if skip_value:
            skip_value = False
        elif token in flags:
            skip_value = True
        elif not any(token.startswith(flag + "=") for flag in flags):
            kept.append(token)
    return kept


def plan_study(models: Sequence[str], datasets: Sequence[str], strategies: Sequence[str],
               weights: dict[str, str] | None = None, seeds: Sequence[int] = (0,),
               augments: Sequence[str] = ("none",)) -> list[StudyRun]:
    """Every dataset x model x augmentation x strategy x seed, in that nesting order.

    ``weights`` maps a model to its pretrained checkpoint (default: the official COCO weights ``<model>.pt``).
    Raises ValueError for an empty list, a repeated entry or a strategy that is neither ``scratch`` nor a
    ``--freeze`` value.
    """
    for what, items in (("--models", models), ("--data", datasets), ("--strategies", strategies),
                        ("--seeds", seeds), ("--augment", augments)):
        if not items:
            raise ValueError(f"{what} is empty")
        if len(set(items)) != len(items):
            raise ValueError(f"{what} {','.join(map(str, items))} names an entry twice")
    for strategy in strategies:
        if strategy not in (SCRATCH, AUTO) and strategy.lower() not in PRESETS and not _freeze_like(strategy):
            raise ValueError(f"--strategies {strategy!r}: use scratch, auto, a preset ({', '.join(PRESETS)}) or a "
                             f"--freeze value like 9 or 0-3")
    weights = weights or {}
    for augment in augments:
        if augment not in AUGMENT_PRESETS:
            raise ValueError(f"--augment {augment!r}: use {', '.join(AUGMENT_PRESETS)}")
    return [StudyRun(data, model, strategy, "none" if strategy == SCRATCH else weights.get(model, f"{model}.pt"), seed,
                     augment)
            for data in datasets for model in models for augment in augments for strategy in strategies
            for seed in seeds]


def _freeze_like(text: str) -> bool:
    return all(part.replace("-", "").isdigit() for part in text.split(","))


def run_status(run_dir: Path) -> str:
    """``"finished"`` (``summary.json``), ``"resume"`` (``weights/last.pt``, not finished) or ``"new"``."""
    if (run_dir / FINISHED).is_file():
        return "finished"
    if (run_dir / "weights" / "last.pt").is_file():
        return "resume"
    return "new"


def run_one(run: StudyRun, study_dir: Path, common: Sequence[str], devices: Sequence[str] = (),
            python: str = sys.executable) -> tuple[str, int, float]:
    """Train (or resume, or skip) one run in a ``train.py`` subprocess; return ``(status before, exit code,
    seconds)``. Its output goes to ``<study>/logs/<name>.log``.

    ``devices``: GPU ids for this run (``CUDA_VISIBLE_DEVICES``); several make it a ``torchrun`` job with one
    process per GPU. A folder without ``last.pt`` holds no finished epoch and is started over. The run's lock is
    held meanwhile (:func:`~yolofreeze.study.ledger.run_lock`: ``RunLocked`` when another process trains it) and
    its state recorded (running, then finished or failed with the exit code).
    """
    with run_lock(study_dir, run.name):  # RunLocked when another process trains it now
        return _train(run, study_dir, common, devices, python)


def _train(run: StudyRun, study_dir: Path, common: Sequence[str], devices: Sequence[str], python: str
           ) -> tuple[str, int, float]:
    """:func:`run_one` with the run's lock held; records the run's state in the ledger."""
    run_dir = study_dir / run.name
    status = run_status(run_dir)
    if status == "finished":
        return status, 0, 0.0
    if status == "new" and run_dir.exists():
        shutil.rmtree(run_dir)
    argv = (["--resume", str(run_dir)] if status == "resume" else run.train_args(study_dir, common))
    env = dict(os.environ)
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    launcher = [python, "-m", TRAIN_MODULE] if len(devices) <= 1 else [
        python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(len(devices)), "-m", TRAIN_MODULE]
    if devices and "--device" not in argv and status != "resume":
        argv += ["--device", "cuda"]
    log = study_dir / "logs" / f"{run.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    record_state(study_dir, run.name, "running", by=owner(), log=str(log))
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(launcher + argv)}\n")
        out.flush()
        code = subprocess.run(launcher + argv, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    record_state(study_dir, run.name, "finished" if code == 0 else "failed", exit_code=code, log=str(log))
    return status, code, time.perf_counter() - started


def run_study(runs: Sequence[StudyRun], study_dir: Path, common: Sequence[str], devices: Sequence[str] = (),
              gpus_per_run: int = 1, say: Callable[[str], None] = lambda _: None) -> dict[str, int]:
    """Run every combination (skipping finished ones): one at a time, or with ``devices`` one run per group of
    ``gpus_per_run`` GPUs at a time. ``say`` gets a line when a run starts and when it ends; returns
    ``{run name: exit code}``."""
    groups = [list(devices[k:k + gpus_per_run]) for k in range(0, len(devices), gpus_per_run)] or [[]]
    free: Queue[list[str]] = Queue()
    for group in groups:
        free.put(group)
    codes: dict[str, int] = {}

    def work(item: tuple[int, StudyRun]) -> None:
        number, run = item
        group = free.get()
        try:
            where = f" on GPU {','.join(group)}" if group else ""
            if run_status(study_dir / run.name) != "finished":
                say(f"[{number}/{len(runs)}] {run.name}: training{where} (log: {study_dir / 'logs'}/{run.name}.log)")
            try:
                status, code, seconds = run_one(run, study_dir, common, group)
            except RunLocked as busy:
                say(f"[{number}/{len(runs)}] {busy}: skipped here")
                return
            codes[run.name] = code
            verb = {"finished": "already finished, skipped", "resume": "resumed and finished",
                    "new": "finished"}[status]
            say(f"[{number}/{len(runs)}] {run.name}: " + (verb if code == 0 else f"FAILED (exit {code}; see its log)")
                + (f" in {seconds / 60:.1f} min" if seconds else ""))
        finally:
            free.put(group)

    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        list(pool.map(work, enumerate(runs, start=1)))
    return codes


def check_start_weights(runs: Sequence[StudyRun], study_dir: Path) -> None:
    """Make sure every start checkpoint of the runs still to train can be had before any run starts: a local file
    exists, an official one is in the weights cache or is downloaded now. Raises ``FileNotFoundError`` or
    ``ConnectionError`` with one line naming the model, the runs that need it and what to do."""
    needed: dict[str, list[str]] = {}
    for run in runs:
        if run.weights.lower() != "none" and run_status(study_dir / run.name) != "finished":
            needed.setdefault(run.weights, []).append(run.name)
    for weights, names in needed.items():
        which = f"{names[0]}" + (f" and {len(names) - 1} other runs" if len(names) > 1 else "")
        name = official_name(weights)
        if name:
            try:
                download_weights(name)
            except ConnectionError as error:
                raise ConnectionError(f"the start weights of {which} cannot be had: {error}; or give "
                                      f"--weights {Path(weights).stem}=PATH") from None
        elif not Path(weights).exists():
            raise FileNotFoundError(f"the start weights of {which}, {weights}, do not exist")


def weights_table(text: str | None, models: Sequence[str]) -> dict[str, str]:
    """``--weights``: ``MODEL=PATH,…`` or a single path (one model only)."""
    if not text:
        return {}
    if "=" not in text:
        if len(models) != 1:
            raise ValueError(f"--weights {text}: with several models give MODEL=PATH for each")
        return {models[0]: text}
    table = dict(item.split("=", 1) for item in text.split(","))
    unknown = sorted(set(table) - set(models))
    if unknown:
        raise ValueError(f"--weights names {', '.join(unknown)}, which --models does not list")
    return table
