"""The frozen-prefix feature cache: the model's block-range forward, cached vs uncached training (v8, v10), stale
keys rebuilt, resume, and every refusal (not a prefix, batch-norm train, unfreeze schedule, too big)."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import train as train_cli
from yolofreeze.freezing import cache as cache_module
from yolofreeze.freezing.cache import (HEADROOM, CacheNotApplicable, CacheTooLarge, FeatureCache, estimate_cache,
                                       estimate_run_cache, feature_bytes, split_datasets, why_not_cacheable)
from yolofreeze.weights.checkpoints import load_model
from yolofreeze.data import DEMO_NAMES, DatasetInfo, DetectionDataset, collate, resolve_dataset, write_demo_dataset
from yolofreeze.evaluation.evaluate import evaluate, predict_records
from yolofreeze.freezing.plan import FreezePlan
from yolofreeze.model import PrefixOutputs, build_model
from yolofreeze.training.optim import TrainConfig
from yolofreeze.training.runs import read_results
from yolofreeze.training.trainer import Trainer, seed_everything

IMGSZ = 128
# fp16 storage rounds each cached value by at most 2**-11 relative. With the same weights a batch's loss moves by
# < 1e-3 relative (measured: ~2e-5); over a run the SGD steps carry the difference on, and the per-step losses of
# a 2-epoch fine-tune drift apart by up to this much (measured: 4e-3 at 160 px, 2e-2 at 192 px).
FP16_RUN_BOUND = 5e-2
CLI = ["--weights", "none", "--imgsz", str(IMGSZ), "--batch", "4", "--workers", "0", "--grad-norms", "off"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these tiny runs gain nothing from two, and two threads stall on a shared 2-core CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo_yaml(tmp_path_factory) -> Path:
    """16 train and 8 val demo images of 160 px: data.yaml."""
    return write_demo_dataset(tmp_path_factory.mktemp("data") / "demo", n_train=16, n_val=8, size=160)


@pytest.mark.parametrize("name", ["yolov8n", "yolov10n"])
def test_boundary_lists_the_outputs_later_blocks_read(name):
    model = build_model(name)
    assert model.boundary(9) == [4, 6, 8]  # fr2: the P3 and P4 skips and the input of SPPF
    assert model.boundary(1) == [0]
    head = len(model.blocks) - 1
    assert model.boundary(head) == sorted(model.blocks[head].source)
    with pytest.raises(ValueError, match="can start at blocks"):
        model.boundary(head + 1)


def _flat(out) -> torch.Tensor | list[torch.Tensor]:
    """A model output as one tensor (eval) or a list of maps (train; YOLOv10's branches in key order)."""
    if isinstance(out, dict):
        return [m for key in sorted(out) for m in out[key]]
    return out


@pytest.mark.parametrize("name", ["yolov8n", "yolov10n"])
@pytest.mark.parametrize("training", [True, False])
def test_block_range_forward_equals_the_full_forward(name, training):
    torch.manual_seed(0)
    model = build_model(name).train(training)
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        full = model(x)
        for start in (1, 4, 9, 11, 13, len(model.blocks) - 1):
            part = model(model.prefix_outputs(x, start))
            a, b = _flat(full), _flat(part)
            assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True)) if isinstance(a, list) else torch.equal(a, b), start
        if not training:
            maps = _flat(model.head.maps(model.head_inputs(x)))
            cached_maps = _flat(model.head.maps(model.head_inputs(model.prefix_outputs(x, 9))))
            assert all(torch.equal(a, b) for a, b in zip(maps, cached_maps, strict=True))
    with pytest.raises(ValueError, match=r"needs the outputs of blocks \[4, 6, 8\]"):
        model(PrefixOutputs(9, {4: x, 6: x}))


def _trainer(data, run_dir: Path, model, cache: str | None, dtype: str = "fp32", epochs: int = 2,
             imgsz: int = IMGSZ, amp: str | bool = False) -> Trainer:
    """A seeded tiny fr2 fine-tune of ``model`` (a name: from scratch; a path: those weights): batch 4 with one SGD
    step per batch (nbs 4)."""
    seed_everything(0)
    model = build_model(model, names=list(DEMO_NAMES)) if str(model).startswith("yolo") else load_model(model)
    cfg = TrainConfig(epochs=epochs, batch=4, nbs=4, imgsz=imgsz, seed=0, patience=0)
    run_dir.mkdir(parents=True)
    return Trainer(model, data, cfg, run_dir, FreezePlan.parse("fr2", model), workers=0, progress=False,
                   grad_norms=False, cache_frozen=cache, cache_dtype=dtype, amp=amp)


def _fit_recording_losses(trainer: Trainer) -> torch.Tensor:
    """Fit and return the ``(steps, 3)`` box/cls/dfl losses of every training batch."""
    losses, step = [], trainer.train_step

    def recorded(batch, epoch, index):
        parts = step(batch, epoch, index)
        losses.append(torch.stack([parts[k].detach().float() for k in ("box", "cls", "dfl")]))
        return parts
    trainer.train_step = recorded
    trainer.fit()
    return torch.stack(losses)


def _runs(data, folder: Path, model, imgsz: int, caches) -> dict:
    """Per label: (per-step losses, results.csv columns, trainer) of the same seeded run with each cache."""
    runs = {}
    for label, cache, dtype in caches:
        trainer = _trainer(data, folder / label, model, cache, dtype, imgsz=imgsz)
        runs[label] = (_fit_recording_losses(trainer), read_results(folder / label / "results.csv"), trainer)
    return runs


@pytest.fixture(scope="module")
def cplid(shared_data) -> DatasetInfo:
    """16 train and all 20 val images of cplid-dev."""
    info = resolve_dataset(shared_data / "cplid-dev" / "data.yaml")
    return replace(info, splits={"train": info.splits["train"][:16], "val": info.splits["val"]})


@pytest.fixture(scope="module")
def v8_runs(cplid, cplid_oracle_weights, tmp_path_factory):
    """yolov8n with real signal (trained on cplid-dev) fine-tuned at fr2, 160 px: uncached, fp32 RAM cache, fp16
    disk cache."""
    return _runs(cplid, tmp_path_factory.mktemp("v8"), cplid_oracle_weights, 160,
                 [("plain", None, "fp32"), ("ram-fp32", "ram", "fp32"), ("disk-fp16", "disk", "fp16")])


@pytest.fixture(scope="module")
def v10_runs(demo_yaml, tmp_path_factory):
    """yolov10n from scratch on the demo data at fr2, 128 px: uncached, fp32 disk cache."""
    return _runs(resolve_dataset(demo_yaml), tmp_path_factory.mktemp("v10"), "yolov10n", IMGSZ,
                 [("plain", None, "fp32"), ("disk-fp32", "disk", "fp32")])


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


@pytest.mark.parametrize("runs, label", [("v8_runs", "ram-fp32"), ("v10_runs", "disk-fp32")])
def test_fp32_cache_gives_the_same_losses_per_step_and_the_same_metrics(runs, label, request):
    runs = request.getfixturevalue(runs)
    plain, plain_rows, _ = runs["plain"]
    cached, cached_rows, trainer = runs[label]
    assert len(plain) == len(cached) == 2 * trainer.nb
    assert _relative(cached, plain) <= 1e-5
    for column in ("val/box_loss", "val/cls_loss", "val/dfl_loss"):  # the validation pass ran on cached outputs
        assert cached_rows[column] == pytest.approx(plain_rows[column], rel=1e-5), column
    for column in ("metrics/mAP50(B)", "metrics/mAP50-95(B)"):
        assert abs(cached_rows[column][-1] - plain_rows[column][-1]) <= 0.002, column
    assert not (trainer.run_dir / "feature_cache").exists()  # disk entries go when the run ends


def test_under_bf16_autocast_the_cache_gives_the_losses_of_the_uncached_autocast_run(demo_yaml, tmp_path):
    data = resolve_dataset(demo_yaml)
    data = replace(data, splits={"train": data.splits["train"][:16], "val": data.splits["val"][:8]})
    losses = {}
    for label, cache in (("plain", None), ("ram", "ram")):
        trainer = _trainer(data, tmp_path / label, "yolov8n", cache, epochs=1, amp="bf16")
        assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
        losses[label] = _fit_recording_losses(trainer)
    fp32 = _fit_recording_losses(_trainer(data, tmp_path / "fp32", "yolov8n", None, epochs=1))
    assert _relative(losses["ram"], losses["plain"]) <= 1e-5
    assert _relative(fp32, losses["plain"]) > 1e-4  # autocast really ran: bfloat16 losses differ from float32


def test_the_v8_comparison_has_real_detections(v8_runs):
    assert min(v8_runs["plain"][1]["metrics/mAP50(B)"]) > 0.05  # the mAP check above is not 0 against 0 (0.10-0.15 measured over seeds)


def test_fp16_cache_stays_within_its_stated_bounds(v8_runs):
    """fp16 bound over the run: per-step losses within FP16_RUN_BOUND; the first steps (near-equal weights) within
    1e-3. (With equal weights: see test_fp16_cache_with_the_same_weights.)"""
    plain, _, _ = v8_runs["plain"]
    cached, _, _ = v8_runs["disk-fp16"]
    assert _relative(cached[:2], plain[:2]) <= 1e-3
    assert _relative(cached, plain) <= FP16_RUN_BOUND


def test_fp16_cache_with_the_same_weights(cplid, cplid_oracle_weights, tmp_path):
    """The same trained weights, each training batch's loss from images and from fp16 cached outputs: within 1e-3;
    validation from fp16 cached outputs: mAP within 0.002, losses within 1e-3."""
    trainer = _trainer(cplid, tmp_path / "run", cplid_oracle_weights, "ram", "fp16", imgsz=160)
    cache = trainer.feature_caches["train"]
    cache.refresh(trainer.model)
    trainer.sampler.set_epoch(0)
    with torch.no_grad():
        for images, features in zip(trainer.loader, trainer.epoch_batches(), strict=True):
            outputs = [trainer.model(images.images.to(trainer.device).float() / 255), trainer.model(features.prefix(trainer.device))]
            losses = [trainer.criterion(out, batch.targets, (160, 160))[0]
                      for out, batch in zip(outputs, (images, features), strict=True)]
            assert _relative(losses[1], losses[0]) <= 1e-3
    cached = trainer.validate()  # the EMA weights from the val split's cached outputs
    plain = evaluate(trainer.ema.module, cplid.splits["val"], cplid.names, imgsz=160, batch=8, progress=False,
                     criterion=trainer.criterion)
    assert plain.map50 > 0.1 and abs(cached.map50_95 - plain.map50_95) <= 0.002
    assert abs(cached.map50 - plain.map50) <= 0.002
    for name, value in plain.losses.items():
        assert cached.losses[name] == pytest.approx(value, rel=1e-3), name


def test_validation_from_cached_outputs_gives_the_same_detections(demo_yaml, tmp_path):
    data = resolve_dataset(demo_yaml)
    trainer = _trainer(data, tmp_path / "run", "yolov8n", "ram")
    model, records = trainer.ema.module, data.splits["val"]
    cache = trainer.feature_caches["val"]
    cache.refresh(model)
    size = 8
    batches = cache.batches([list(range(s, min(s + size, len(records)))) for s in range(0, len(records), size)])
    images = predict_records(model, records, [0, 1, 2], IMGSZ, batch=size, progress=False)
    cached = predict_records(model, records, [0, 1, 2], IMGSZ, batch=size, progress=False, batches=batches)
    assert len(images.detections) == len(cached.detections) > 0
    for a, b in zip(images.detections, cached.detections, strict=True):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-2) and a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_building_the_cache_draws_nothing_from_the_global_random_state(demo_yaml, tmp_path):
    trainer = _trainer(resolve_dataset(demo_yaml), tmp_path / "run", "yolov8n", "ram")
    state = torch.get_rng_state()
    assert trainer.feature_caches["train"].refresh(trainer.model) == 16
    assert torch.equal(state, torch.get_rng_state())


def test_a_stale_key_is_rebuilt_never_reused(demo_yaml, tmp_path):
    root = tmp_path / "demo"
    shutil.copytree(demo_yaml.parent, root)
    records = resolve_dataset(root / "data.yaml").splits["train"][:4]
    model = build_model("yolov8n", names=list(DEMO_NAMES))
    plan = FreezePlan.parse("fr2", model)
    dataset = DetectionDataset(records, IMGSZ)
    cache = FeatureCache(dataset, plan, "disk", "fp32", tmp_path / "cache", batch=4)

    def stored(position: int) -> dict[int, torch.Tensor]:
        return next(iter(cache.batches([[position]]))).features

    def expected(position: int) -> dict[int, torch.Tensor]:
        batch = collate([dataset[position]])
        return model.prefix_outputs(batch.images.float() / 255, 9).outputs

    assert cache.refresh(model) == 4 and cache.refresh(model) == 0
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 4
    # the same file name with another image's content (same size, new modification time)
    shutil.copyfile(records[1].path, records[0].path)
    os.utime(records[0].path, ns=(os.stat(records[0].path).st_atime_ns, os.stat(records[0].path).st_mtime_ns + 10**9))
    assert cache.refresh(model) == 1
    assert all(torch.allclose(stored(0)[i], expected(0)[i][:1], atol=1e-6) for i in (4, 6, 8))
    assert all(torch.allclose(stored(0)[i], stored(1)[i], atol=1e-6) for i in (4, 6, 8))
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 4  # the stale entry was deleted
    # other labels for one image: that entry again
    cache.dataset = DetectionDataset([replace(records[0], boxes=records[0].boxes[:1], classes=records[0].classes[:1],
                                              flags=records[0].flags[:1])] + records[1:], IMGSZ)
    assert cache.refresh(model) == 1
    # a frozen weight changed: every entry
    with torch.no_grad():
        model.model[2].cv1.conv.weight.mul_(1.5)
    assert cache.refresh(model) == 4
    assert all(torch.allclose(stored(2)[i], expected(2)[i], atol=1e-5) for i in (4, 6, 8))


@pytest.mark.parametrize("freeze, bn, unfreeze, reason", [
    ("none", "eval", None, "nothing is frozen"),
    ("0-3,5", "eval", None, "the frozen blocks (0, 1, 2, 3, 5) are not a prefix 0-4"),
    ("fr2", "train", None, "batch-norm is in train mode (--frozen-bn train)"),
    ("fr3", "eval", "1:0-3,5", "the frozen blocks (0, 1, 2, 3, 5) from epoch 2 are not a prefix 0-4"),
])
def test_each_inapplicable_plan_is_refused_with_its_reason(freeze, bn, unfreeze, reason, demo_yaml, tmp_path):
    model = build_model("yolov8n", names=list(DEMO_NAMES))
    plan = FreezePlan.parse(freeze, model, bn)
    if unfreeze:
        plan = plan.with_unfreeze(unfreeze, model)
    assert reason in why_not_cacheable(plan)
    dataset = DetectionDataset(resolve_dataset(demo_yaml).splits["val"], IMGSZ)
    with pytest.raises(CacheNotApplicable, match="--cache-frozen does not apply"):
        estimate_cache(model, plan, [dataset], "ram", "fp32")
    assert why_not_cacheable(FreezePlan.parse("fr2", model)) is None


def test_with_unfreeze_each_phase_caches_its_own_prefix_and_training_is_unchanged(demo_yaml, tmp_path):
    """fr3, then fr1 after epoch 1, then nothing frozen after epoch 2: the cache is built for blocks 0-21, then
    0-3, and the last phase trains on images; every training step's losses equal the uncached run's."""
    data = resolve_dataset(demo_yaml)
    built = []
    build = FeatureCache._build

    def counting(self, model, positions):
        built.append((self.start, len(positions)))
        return build(self, model, positions)

    losses, trainers = {}, {}
    for label, cache in (("plain", None), ("cached", "ram")):
        seed_everything(0)
        model = build_model("yolov8n", names=list(DEMO_NAMES))
        plan = FreezePlan.parse("fr3", model).with_unfreeze("1:fr1,2:none", model)
        cfg = TrainConfig(epochs=3, batch=4, nbs=4, imgsz=IMGSZ, seed=0, patience=0, warmup_epochs=0)
        (tmp_path / label).mkdir()
        trainers[label] = Trainer(model, data, cfg, tmp_path / label, plan, workers=0, progress=False,
                                  grad_norms=False, cache_frozen=cache)
        FeatureCache._build = counting
        try:
            losses[label] = _fit_recording_losses(trainers[label])
        finally:
            FeatureCache._build = build
    trained, validated = len(data.splits["train"]), len(data.splits["val"])
    assert built == [(22, trained), (22, validated), (4, trained), (4, validated)]  # epoch 3: images
    estimate, model = trainers["cached"].cache_estimate, trainers["cached"].model
    per_image = {start: feature_bytes(model, start, (IMGSZ, IMGSZ), "fp32") for start in (22, 4)}
    largest = max(per_image, key=per_image.get)  # the cache holds one phase's outputs at a time
    assert (estimate.start, estimate.phases, estimate.per_image) == (largest, 2, per_image[largest])
    assert "the largest of the caches of 2 prefixes" in estimate.describe()
    assert len(losses["plain"]) == len(losses["cached"]) == 3 * trainers["plain"].nb
    assert _relative(losses["cached"], losses["plain"]) <= 1e-5
    plain, cached = (read_results(tmp_path / label / "results.csv") for label in ("plain", "cached"))
    for column in ("val/box_loss", "val/cls_loss", "val/dfl_loss"):
        assert cached[column] == pytest.approx(plain[column], rel=1e-5), column


def test_the_estimate_counts_the_boundary_outputs_at_every_letterbox_shape(demo_yaml):
    model = build_model("yolov8n", names=list(DEMO_NAMES))
    plan = FreezePlan.parse("fr2", model)
    train = DetectionDataset(resolve_dataset(demo_yaml).splits["train"], IMGSZ)
    estimate = estimate_cache(model, plan, [train], "ram", "fp16")
    # yolov8n: block 4 is 64 x 16 x 16 at 128 px (stride 8), block 6 128 x 8 x 8, block 8 256 x 4 x 4; 2 bytes each
    assert estimate.per_image == 2 * (64 * 16 * 16 + 128 * 8 * 8 + 256 * 4 * 4)
    assert estimate.total == 16 * estimate.per_image == 16 * feature_bytes(model, 9, (IMGSZ, IMGSZ), "fp16")
    assert estimate.blocks == (4, 6, 8) and estimate.start == 9
    assert "blocks 4, 6, 8" in estimate.describe() and "RAM available" in estimate.describe()


def test_under_torchrun_each_process_on_the_machine_counts_its_copy_of_the_training_outputs_in_ram(
        demo_yaml, tmp_path, monkeypatch):
    model = build_model("yolov8n", names=list(DEMO_NAMES))
    plan = FreezePlan.parse("fr2", model)
    info = resolve_dataset(demo_yaml)
    cfg = TrainConfig(imgsz=IMGSZ, batch=4)
    datasets = split_datasets(model, info.splits, cfg.imgsz, cfg.val_batch)
    train, val = (estimate_cache(model, plan, [datasets[s]], "ram", "fp32").total for s in ("train", "val"))
    assert train > 0 and val > 0
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    single = estimate_run_cache(model, plan, info.splits, cfg.imgsz, cfg.val_batch, "ram", "fp32", tmp_path)
    assert single.total == train + val and single.processes == 1 and "processes" not in single.describe()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    three = estimate_run_cache(model, plan, info.splits, cfg.imgsz, cfg.val_batch, "ram", "fp32", tmp_path)
    assert three.total == 3 * train + val and "each of 3 processes" in three.describe()
    assert estimate_run_cache(model, plan, info.splits, cfg.imgsz, cfg.val_batch, "disk", "fp32", tmp_path).total == train + val
    monkeypatch.setattr(cache_module, "available_bytes", lambda *_: (2 * train + val) / HEADROOM)
    with pytest.raises(CacheTooLarge, match="each of 3 processes holds the training outputs"):
        estimate_run_cache(model, plan, info.splits, cfg.imgsz, cfg.val_batch, "ram", "fp32", tmp_path)


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_a_cache_that_does_not_fit_is_refused_with_needed_and_available(mode, demo_yaml, tmp_path, monkeypatch):
    model = build_model("yolov8n", names=list(DEMO_NAMES))
    monkeypatch.setattr(cache_module, "available_bytes", lambda *_: 1_000_000)
    train = DetectionDataset(resolve_dataset(demo_yaml).splits["train"], IMGSZ)
    with pytest.raises(CacheTooLarge, match=r"needs 1\.8 MB .* only 1\.0 MB .* available"):
        estimate_cache(model, FreezePlan.parse("fr2", model), [train], mode, "fp32", tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["--freeze", "0-3,5", "--cache-frozen", "ram"], "not a prefix 0-4"),
    (["--freeze", "fr2", "--frozen-bn", "train", "--cache-frozen", "disk"], "--frozen-bn train"),
    (["--freeze", "fr2", "--unfreeze", "1:0-2,4", "--epochs", "2", "--cache-frozen", "ram"], "from epoch 2 are not"),
    (["--freeze", "fr2", "--cache-dtype", "fp16"], "--cache-dtype fp16 applies with --cache-frozen"),
    (["--freeze", "fr2", "--cache-frozen", "ram"], "needs 3.3 MB"),
])
def test_cli_refuses_before_making_a_run_folder(argv, message, demo_yaml, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cache_module, "available_bytes", lambda *_: 1_000_000)
    assert train_cli.main(["--data", str(demo_yaml), *CLI, *argv, "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())


class _Killed(Exception):
    """Stands for a kill after the first epoch's checkpoint."""


def test_a_killed_cached_run_resumes_reusing_the_disk_entries(demo_yaml, tmp_path, monkeypatch):
    argv = ["--data", str(demo_yaml), *CLI, "--freeze", "fr2", "--epochs", "2", "--cache-frozen", "disk",
            "--project", str(tmp_path)]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert train_cli.main([*argv, "--name", "full"]) == 0
    assert "frozen-prefix cache (disk, fp32): outputs of blocks 4, 6, 8" in out.getvalue()

    save_epoch = Trainer.save_epoch

    def killed_after_first(self, epoch, row, best):
        save_epoch(self, epoch, row, best)
        if epoch == 0:
            raise _Killed
    monkeypatch.setattr(Trainer, "save_epoch", killed_after_first)
    with pytest.raises(_Killed), contextlib.redirect_stdout(io.StringIO()):
        train_cli.main([*argv, "--name", "killed"])
    monkeypatch.undo()
    killed = tmp_path / "killed"
    assert len(list((killed / "feature_cache" / "train").glob("*.pt"))) == 16

    built = []
    build = FeatureCache._build
    monkeypatch.setattr(FeatureCache, "_build", lambda self, model, positions: (built.append(len(positions)),
                                                                                build(self, model, positions)))
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert train_cli.main(["--resume", str(killed), "--workers", "0"]) == 0
    assert built == [] and "(0 B still to compute)" in out.getvalue()
    full, resumed = read_results(tmp_path / "full" / "results.csv"), read_results(killed / "results.csv")
    for column in ("train/box_loss", "train/cls_loss", "val/dfl_loss", "metrics/mAP50-95(B)"):
        assert resumed[column] == pytest.approx(full[column], rel=1e-6, abs=1e-9), column
    assert not (killed / "feature_cache").exists()
    assert np.isfinite(resumed["train/box_loss"]).all()
