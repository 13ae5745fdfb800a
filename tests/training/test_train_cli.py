"""train.py end to end on small real runs: run folder contents, results.csv columns, patience, bad input, NaN stop,
corrupt files skipped, class-name changes at the model-dataset meeting."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import train as train_cli
from yolofreeze.weights.checkpoints import load_model, random_model, save_checkpoint
from yolofreeze.data import DEMO_NAMES, write_demo_dataset
from yolofreeze.training.optim import accumulate, lr_at
from yolofreeze.training.runs import RESULTS_COLUMNS, read_results
from yolofreeze.training.setup import RunSettings, new_trainer, parse_train_args
from yolofreeze.training.trainer import Distributed

TINY = ["--imgsz", "128", "--batch", "8", "--workers", "0"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """The first 48 train and 16 val images of the demo dataset (6 batches of 8), in a temporary folder: data.yaml."""
    return write_demo_dataset(tmp_path_factory.mktemp("datasets") / "demo", n_train=48, n_val=16)


@pytest.fixture(scope="module")
def demo_run(demo_data, tmp_path_factory):
    """Two epochs of yolov8n from scratch on the demo data: (exit code, stdout, run folder)."""
    project = tmp_path_factory.mktemp("runs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = train_cli.main(["--data", str(demo_data), "--weights", "none", "--epochs", "2", "--name", "demo",
                               "--project", str(project), *TINY])
    return code, out.getvalue(), project / "demo"


def test_run_folder_holds_weights_results_plot_and_args(demo_run):
    code, out, run = demo_run
    assert code == 0, out
    for name in ("args.yaml", "freeze_audit.json", "memory.json", "grad_norms.csv", "grad_norms.png", "results.csv",
                 "results.png", "weights/last.pt", "weights/best.pt"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    memory = json.loads((run / "memory.json").read_text())
    trainable_bytes = 4 * sum(p.numel() for n, p in load_model(run / "weights" / "last.pt").named_parameters()
                              if ".dfl." not in n)  # fp32, nothing frozen
    assert memory["gradients_bytes"] == memory["optimizer_state_bytes"] == trainable_bytes
    assert memory["saved_activations_bytes"] > 0 and memory["frozen_blocks"] == []
    assert "saved activations" in out and "gradient L2 norm" in out
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["epochs"] == 2 and args["imgsz"] == 128 and args["lr0"] == 0.01 and args["freeze"] == ["0"] and args["frozen_blocks"] == []
    assert "best epoch" in out and "mAP@50:95" in out and str(run) in out


def test_results_csv_has_the_reference_columns_then_ours(demo_run):
    _, _, run = demo_run
    header = (run / "results.csv").read_text().splitlines()[0].split(",")
    assert header == [
        "epoch", "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)", "metrics/recall(B)",
        "metrics/mAP50(B)", "metrics/mAP50-95(B)", "val/box_loss", "val/cls_loss", "val/dfl_loss", "lr/pg0",
        "lr/pg1", "lr/pg2", "epoch_seconds", "memory/peak_rss_mb", "memory/cuda_allocated_mb",
        "memory/cuda_reserved_mb", "grad_norm/total", "grad_norm/backbone", "grad_norm/neck", "grad_norm/head",
        "frozen_blocks", "data_wait_seconds", "val_seconds"]
    assert list(RESULTS_COLUMNS) == header
    results = read_results(run / "results.csv")
    assert results["epoch"] == [1.0, 2.0]
    for column in header:
        finite = torch.isfinite(torch.tensor(results[column]))
        assert all(~finite if column.startswith("memory/cuda") else finite), column  # no CUDA here


def test_checkpoints_load_without_pickled_code_and_hold_the_ema_weights(demo_run):
    _, _, run = demo_run
    last = torch.load(run / "weights" / "last.pt", weights_only=True)
    best = torch.load(run / "weights" / "best.pt", weights_only=True)
    assert last["format"] == "yolofreeze" and last["names"] == list(DEMO_NAMES)
    assert last["train"]["epoch"] == 2 and last["train"]["ema_updates"] >= 1
    assert {"optimizer", "model", "best_fitness", "rng"} <= set(last["train"])
    assert "optimizer" not in best["train"] and best["train"]["epoch"] in (1, 2)
    # the saved weights are the EMA's, not the raw training weights
    differs = [k for k, v in last["state_dict"].items() if v.is_floating_point()
               and not torch.equal(v, last["train"]["model"][k])]
    assert differs
    model = load_model(run / "weights" / "best.pt")
    assert model.arch == "yolov8n" and model.names == list(DEMO_NAMES)


def test_a_second_run_of_the_same_name_gets_a_new_folder(demo_run, demo_data, capsys):
    _, _, run = demo_run
    assert train_cli.main(["--data", str(demo_data), "--weights", "none", "--epochs", "1", "--name", "demo",
                           "--project", str(run.parent), *TINY]) == 0
    assert (run.parent / "demo2" / "weights" / "last.pt").is_file()
    assert len(read_results(run / "results.csv")["epoch"]) == 2  # the first run is untouched


def test_patience_stops_when_fitness_stops_improving(demo_data, tmp_path, capsys):
    # from scratch at 128 px nothing is found in 3 epochs: fitness stays 0, so only epoch 1 improves (on -inf)
    assert train_cli.main(["--data", str(demo_data), "--weights", "none", "--epochs", "3", "--patience", "1",
                           "--grad-norms", "off", "--project", str(tmp_path), "--name", "p", *TINY]) == 0
    out = capsys.readouterr().out
    results = read_results(tmp_path / "p" / "results.csv")
    assert results["epoch"] == [1.0, 2.0]
    assert "stopped early" in out and "best epoch 1" in out
    # --grad-norms off: no grad_norms files, the columns are NaN
    assert not (tmp_path / "p" / "grad_norms.csv").exists() and "gradient L2 norm" not in out
    assert all(v != v for v in results["grad_norm/total"])


def test_bad_freeze_index_is_an_error(demo_data, tmp_path, capsys):
    assert train_cli.main(["--data", str(demo_data), "--weights", "none", "--freeze", "40",
                           "--project", str(tmp_path)]) == 2
    assert "has 23 blocks (0-22)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before a run folder was made


@pytest.mark.parametrize("argv, message", [
    (["--data", "/no/such/data.yaml"], "/no/such/data.yaml"),
    (["--resume", "/no/such/run"], "nothing to resume in /no/such/run"),
    (["--imgsz", "100"], "not a positive multiple of 32"),
    (["--lr0", "-1"], "must be positive"),
    (["--freeze", "fr3", "--unfreeze", "5:fr1", "--epochs", "5"], "never reached in a 5-epoch run"),
    (["--freeze", "fr3", "--unfreeze", "5:fr1,3:none"], "the epochs must increase"),
    (["--unfreeze", "5-fr1"], "expected EPOCHS:FREEZE entries"),
    (["--unfreeze", "2:0-30"], "--unfreeze 0-30: yolov8n has 23 blocks"),
    (["--lr-mult", "backbone=0"], "positive number"),
    (["--lr-mult", "trunk=0.1"], "expected a part (backbone, neck, head) or a block range"),
    (["--lr-mult", "backbone=0.1,5-12=0.5"], "block 5 is named by both backbone and 5-12"),
    (["--optimizer", "Lion"], "unknown optimizer 'Lion'"),
    (["--momentum", "1.5"], "momentum (--momentum) must be in (0, 1)"),
    (["--weight-decay", "-1"], "-1.0 must not be negative"),
    (["--nbs", "0"], "0 must be at least 1"),
    (["--warmup-momentum", "1"], "warmup_momentum (--warmup-momentum) must be in [0, 1)"),
    (["--cfg", "/no/such/args.yaml"], "--cfg /no/such/args.yaml:"),
    (["--fliplr", "1.5"], "1.5 is not between 0 and 1"),
    (["--freeze", "fr2", "--cache-frozen", "ram", "--augment", "light"], "but --augment light changes the images"),
    (["--freeze", "fr2", "--cache-frozen", "ram", "--hsv-v", "0.2"], "but --hsv-v 0.2 changes the images"),
    (["--augment", "default", "--close-mosaic", "20", "--epochs", "5"], "--close-mosaic 20 is more than the run's 5"),
    (["--scale", "1"], "scale (--scale) must be in [0, 1)"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, demo_data, tmp_path, capsys):
    data = [] if "--data" in argv else ["--data", str(demo_data), "--weights", "none"]
    assert train_cli.main([*data, *argv, "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before a run folder was made


def test_offline_without_pretrained_weights_says_how_to_train_from_scratch(demo_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YOLOFREEZE_WEIGHTS", str(tmp_path / "cache"))
    monkeypatch.setenv("YOLOFREEZE_WEIGHTS_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert train_cli.main(["--data", str(demo_data), "--weights", "yolov8n.pt", "--project", str(tmp_path)]) == 2
    assert "--weights none" in capsys.readouterr().err


def test_nan_loss_stops_with_epoch_and_batch(demo_data, tmp_path, capsys):
    model = random_model("yolov8n", names=list(DEMO_NAMES))
    with torch.no_grad():
        model.model[0].conv.weight[0, 0, 0, 0] = float("nan")
    weights = save_checkpoint(model, tmp_path / "nan.pt")
    assert train_cli.main(["--data", str(demo_data), "--weights", str(weights), "--epochs", "1",
                           "--project", str(tmp_path), "--name", "nan", *TINY]) == 1
    err = capsys.readouterr().err
    assert "loss became nan at epoch 1, batch 1 of 6" in err and "no checkpoint was written" in err
    assert not (tmp_path / "nan" / "weights" / "last.pt").exists()


def test_corrupt_image_and_label_are_reported_and_skipped(demo_data, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(demo_data.parent, root)
    image = root / "images" / "train" / "train_0003.jpg"
    image.write_bytes(image.read_bytes()[:300])  # truncated JPEG
    (root / "labels" / "train" / "train_0005.txt").write_text("0 0.5 0.5 zero 0.2\n")
    assert train_cli.main(["--data", str(root / "data.yaml"), "--weights", "none", "--epochs", "1",
                           "--project", str(tmp_path), "--name", "b", *TINY]) == 0
    out = capsys.readouterr().out
    assert "problems (2)" in out and "unreadable_image" in out and "bad_annotation" in out
    assert "train_0003.jpg" in out and "train_0005.txt" in out and "training 1 epochs on 47 images" in out
    assert (tmp_path / "b" / "weights" / "last.pt").is_file()


def _trainer_for(weights: Path, data: Path, tmp_path: Path):
    settings, _ = parse_train_args(["--data", str(data), "--weights", str(weights), "--project", str(tmp_path),
                                    *TINY])
    return new_trainer(settings, Distributed())


def test_other_class_names_reinitialise_only_the_class_outputs(demo_data, tmp_path):
    source = random_model("yolov8n", nc=80, seed=3)  # COCO names: none of the demo's classes
    trainer = _trainer_for(save_checkpoint(source, tmp_path / "coco.pt"), demo_data, tmp_path)
    before, after = source.state_dict(), trainer.model.state_dict()
    changed = [k for k in after if before[k].shape != after[k].shape or not torch.equal(before[k], after[k])]
    assert trainer.model.names == list(DEMO_NAMES)
    assert changed and all(k.startswith("model.22.cv3.") for k in changed)
    assert {k for k in after if k.startswith("model.22.cv3.") and k.endswith(".2.bias")} <= set(changed)


def test_same_names_in_another_order_are_remapped_not_reinitialised(demo_data, tmp_path):
    order = [2, 0, 1]
    source = random_model("yolov8n", names=[DEMO_NAMES[k] for k in order], seed=4)
    trainer = _trainer_for(save_checkpoint(source, tmp_path / "perm.pt"), demo_data, tmp_path)
    before, after = source.state_dict(), trainer.model.state_dict()
    for key in after:
        if key.endswith(("cv3.0.2.weight", "cv3.1.2.weight", "cv3.2.2.weight", "cv3.0.2.bias", "cv3.1.2.bias",
                         "cv3.2.2.bias")):
            for old, name in enumerate(source.names):
                assert torch.equal(after[key][DEMO_NAMES.index(name)], before[key][old]), key
        else:
            assert torch.equal(before[key], after[key]), key


def test_freeze_preset_reaches_the_trainer_and_the_optimiser(demo_data, tmp_path, capsys):
    settings, _ = parse_train_args(["--data", str(demo_data), "--weights", "none", "--freeze", "fr2",
                                    "--project", str(tmp_path), *TINY])
    trainer = new_trainer(settings, Distributed(), say=print)
    assert trainer.plan.frozen == set(range(9)) and trainer.run_dir.name == "demo-yolov8n-freezefr2"
    out = capsys.readouterr().out
    assert "parameters frozen" in out and out.count(" frozen    eval") == 9 and "frozen batch-norm: eval" in out
    in_optimiser = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    for name, param in trainer.model.named_parameters():
        assert (id(param) in in_optimiser) == (int(name.split(".")[1]) >= 9 and ".dfl." not in name), name


def test_recipe_flags_reach_the_optimiser_the_schedule_and_the_loss(demo_data, tmp_path):
    settings, _ = parse_train_args(["--data", str(demo_data), "--weights", "none", "--project", str(tmp_path),
                                    "--optimizer", "adamw", "--lr0", "0.003", "--lrf", "0.2", "--momentum", "0.85",
                                    "--weight-decay", "0.01", "--warmup-epochs", "0", "--nbs", "16", "--cos-lr",
                                    "--box", "5", "--cls", "1.5", "--dfl", "0.5", "--epochs", "4", *TINY])
    trainer = new_trainer(settings, Distributed())
    cfg = trainer.cfg
    assert isinstance(trainer.optimizer, torch.optim.AdamW)  # optimiser: kind, betas, decay (batch 8, nbs 16)
    assert {g["betas"] for g in trainer.optimizer.param_groups} == {(0.85, 0.999)}
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [0.01 * 8 * 2 / 16, 0.0, 0.0]
    assert accumulate(cfg) == 2
    # schedule: no warm-up, cosine from lr0 to lr0 * lrf; halfway the cosine is at the mean of the two
    assert lr_at(0, 0, cfg, nb=6) == 0.003 and lr_at(12, 2, cfg, nb=6) == pytest.approx(0.003 * (1 + 0.2) / 2)
    assert trainer.criterion.gains == {"box": 5.0, "cls": 1.5, "dfl": 0.5}  # loss


def test_cfg_reads_an_ultralytics_args_yaml_lists_what_it_ignores_and_flags_win(demo_data, tmp_path, capsys):
    from oracle import ultralytics

    ultralytics()
    from ultralytics.cfg import get_cfg

    args = vars(get_cfg(overrides={"optimizer": "AdamW", "lr0": 0.003, "lrf": 0.2, "cos_lr": True, "epochs": 7,
                                   "batch": 8, "imgsz": 128, "box": 5.0, "warmup_epochs": 1.5, "close_mosaic": 2}))
    path = tmp_path / "args.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in args.items() if not isinstance(v, Path)}))
    settings, _ = parse_train_args(["--data", str(demo_data), "--cfg", str(path), "--lrf", "0.5"])
    cfg = settings.config()
    assert (cfg.optimizer, cfg.lr0, cfg.lrf, cfg.cos_lr, cfg.epochs, cfg.batch, cfg.imgsz, cfg.box,
            cfg.warmup_epochs) == ("AdamW", 0.003, 0.5, True, 7, 8, 128, 5.0, 1.5)  # --lrf on the command line wins
    assert (cfg.fliplr, cfg.hsv_h, cfg.hsv_s, cfg.hsv_v, cfg.mosaic, cfg.translate, cfg.scale, cfg.close_mosaic) == (
        0.5, 0.015, 0.7, 0.4, 1.0, 0.1, 0.5, 2)  # the reference's augmentation
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"warning: --cfg {path}:")
    ignored = err.split(": ", 2)[2].split(", ")
    assert {"mixup", "shear", "perspective", "copy_paste"} <= set(ignored)  # what is not built here
    assert not {"lr0", "hsv_h", "fliplr", "mosaic", "translate"} & set(ignored)


@pytest.mark.parametrize("content, message", [("batch: -1\n", "--cfg {path}: batch: -1 must be at least 1"),
                                              ("[1, 2]\n", "expected a mapping"),
                                              ("cos_lr: maybe\n", "cos_lr: 'maybe' is not true or false"),
                                              ("optimizer: Lion\n", "unknown optimizer 'Lion'")])
def test_a_bad_cfg_file_is_one_line_and_exit_2(content, message, demo_data, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert train_cli.main(["--data", str(demo_data), "--cfg", str(path), "--project", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert message.format(path=path) in err and err.count("\n") == 1 and not (tmp_path / "runs").exists()


def test_optimizer_auto_resolves_for_the_dataset_and_args_yaml_keeps_the_choice(demo_data, tmp_path, capsys):
    assert train_cli.main(["--data", str(demo_data), "--weights", "none", "--optimizer", "auto", "--epochs", "1",
                           "--grad-norms", "off", "--project", str(tmp_path), "--name", "auto", *TINY]) == 0
    assert "optimizer auto: AdamW with lr0 0.001429 and momentum 0.9" in capsys.readouterr().out  # 3 classes
    args = yaml.safe_load((tmp_path / "auto" / "args.yaml").read_text())
    assert (args["optimizer"], args["lr0"], args["momentum"], args["warmup_bias_lr"]) == ("AdamW", 0.001429, 0.9, 0.0)
    ckpt = torch.load(tmp_path / "auto" / "weights" / "last.pt", weights_only=True)
    assert ckpt["train"]["config"]["optimizer"] == "AdamW"  # --resume rebuilds the same optimiser


def test_a_light_augmented_run_finishes_and_its_args_yaml_gives_the_same_recipe(demo_data, tmp_path, capsys):
    assert train_cli.main(["--data", str(demo_data), "--weights", "none", "--augment", "light", "--hsv-h", "0.02",
                           "--epochs", "2", "--grad-norms", "off", "--project", str(tmp_path), "--name", "aug",
                           *TINY]) == 0
    args_yaml = tmp_path / "aug" / "args.yaml"
    args = yaml.safe_load(args_yaml.read_text())
    assert (args["augment"], args["fliplr"], args["hsv_h"], args["hsv_s"], args["hsv_v"]) == ("light", 0.5, 0.02, 0.7,
                                                                                                0.4)
    results = read_results(tmp_path / "aug" / "results.csv")
    assert results["epoch"] == [1.0, 2.0] and all(v == v for v in results["train/box_loss"])
    capsys.readouterr()
    again, _ = parse_train_args(["--data", str(demo_data), "--cfg", str(args_yaml)])
    ckpt = torch.load(tmp_path / "aug" / "weights" / "last.pt", weights_only=True)
    assert again.config().to_dict() == ckpt["train"]["config"]  # the file holds the whole recipe


def test_a_default_augmented_run_trains_with_mosaic_then_without(demo_data, tmp_path, capsys):
    assert train_cli.main(["--data", str(demo_data), "--weights", "none", "--augment", "default", "--epochs", "2",
                           "--close-mosaic", "1", "--workers", "2", "--grad-norms", "off", "--project",
                           str(tmp_path), "--name", "mosaic", "--imgsz", "128", "--batch", "8"]) == 0
    args = yaml.safe_load((tmp_path / "mosaic" / "args.yaml").read_text())
    assert (args["mosaic"], args["translate"], args["scale"], args["close_mosaic"]) == (1.0, 0.1, 0.5, 1)
    assert read_results(tmp_path / "mosaic" / "results.csv")["epoch"] == [1.0, 2.0]
    loader = json.loads((tmp_path / "mosaic" / "memory.json").read_text())["data_loader"]
    assert loader["workers"] == 2 and loader["image_cache_bytes"] == 0
    assert loader["mosaic_canvas_bytes"] == 2 * 5 * 3 * 128 * 128  # per worker: a 256 x 256 canvas and the output
    assert loader["recent_images_bytes"] > 0 and "mosaic" in capsys.readouterr().out


def test_run_settings_round_trip_and_read_the_records_of_older_runs():
    settings, resume = parse_train_args(["--data", "demo", "--freeze", "0-3,5", "--grad-norms", "off", "--cache",
                                         "--cache-frozen=ram", "--epochs", "3"])
    assert resume is None and RunSettings.from_dict(settings.to_dict()) == settings
    assert settings.freeze == ("0-3,5",) and settings.grad_norms is False and settings.cache_images is True
    older = {"data": "demo", "model": "yolov8n", "freeze": [0, 1, 2], "grad_norms": "off", "cache": True,
             "plan": {}, "run_dir": "runs/train/x"}  # what runs recorded before RunSettings
    read = RunSettings.from_dict(older)
    assert read.grad_norms is False and read.cache_images is True and read.freeze == ("0", "1", "2")


def test_help_shows_each_default_once_and_as_typed(capsys):
    assert train_cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: ['0'])" not in out and "(default: 0)" in out
    assert "(default on)" not in out and out.count("(default: on)") == 1


def test_data_wait_and_val_seconds_count_the_loops_waits_and_the_validation(demo_data, tmp_path, monkeypatch):
    import time

    from yolofreeze.data.loader import DetectionDataset

    load = DetectionDataset._load

    def slow(self, index):
        time.sleep(0.02)
        return load(self, index)

    monkeypatch.setattr(DetectionDataset, "_load", slow)  # 48 training images: at least 0.96 s of waiting
    assert train_cli.main(["--data", str(demo_data), "--weights", "none", "--epochs", "1", "--grad-norms", "off",
                           "--project", str(tmp_path), "--name", "wait", *TINY]) == 0
    results = read_results(tmp_path / "wait" / "results.csv")
    assert 0.96 <= results["data_wait_seconds"][0] < results["epoch_seconds"][0]
    validation_loads = 0.02 * 16  # the validation reads each of the 16 val images once
    assert validation_loads <= results["val_seconds"][0] < results["epoch_seconds"][0] + validation_loads
