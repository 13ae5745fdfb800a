"""A few epochs of real fine-tuning on cplid-dev (power-line insulators): the training loss falls and mAP@50 rises."""
from __future__ import annotations

from yolofreeze.weights.checkpoints import load_model
from yolofreeze.data import resolve_dataset
from yolofreeze.evaluation.evaluate import evaluate
from yolofreeze.freezing.plan import FreezePlan
from yolofreeze.training.optim import TrainConfig
from yolofreeze.training.runs import read_results
from yolofreeze.training.trainer import Trainer

IMGSZ = 256


def test_fine_tuning_on_cplid_lowers_the_loss_and_raises_map50(shared_data, cplid_oracle_weights, tmp_path):
    data = resolve_dataset(shared_data / "cplid-dev" / "data.yaml")
    model = load_model(cplid_oracle_weights)  # the oracle's briefly trained yolov8n: weak but real signal
    start = evaluate(model, data.splits["val"], data.names, imgsz=IMGSZ, progress=False).map50
    # nbs 16 = batch: one SGD step per batch, 5 steps an epoch on the 80 training images
    cfg = TrainConfig(epochs=4, batch=16, nbs=16, imgsz=IMGSZ, lr0=0.002, warmup_epochs=1, patience=0)
    trainer = Trainer(model, data, cfg, tmp_path, FreezePlan.prefix(0, model), workers=0, progress=False)
    summary = trainer.fit()
    rows = read_results(tmp_path / "results.csv")
    losses = [sum(rows[f"train/{p}_loss"][e] for p in ("box", "cls", "dfl")) for e in range(4)]
    assert losses[-1] < losses[0], losses
    assert rows["metrics/mAP50(B)"][-1] > max(start, rows["metrics/mAP50(B)"][0]), (start, rows["metrics/mAP50(B)"])
    assert summary.best_epoch >= 2 and summary.best is not None
