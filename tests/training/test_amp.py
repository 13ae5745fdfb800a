"""Mixed precision proven on CPU: autocast and the gradient scaler are device-generic, the recorded gradient norms
are those of the unscaled gradients (the norm clipping uses), an overflowing step is skipped, logged and not
recorded, and ``--amp`` reaches the trainer."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import train as train_cli
from yolofreeze.data import write_demo_dataset
from yolofreeze.training.optim import MAX_GRAD_NORM, optimizer_step
from yolofreeze.training.setup import parse_train_args
from yolofreeze.training.trainer import amp_dtype


def _step_setup(scale: float):
    """A small conv net, an SGD optimiser without momentum (lr 0.1) and a CPU float16 scaler at ``scale``, with
    the scaled gradients of one autocast forward already accumulated."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = model(torch.randn(2, 3, 16, 16)).float().pow(2).sum()
    scaler.scale(loss).backward()
    return model, optimizer, scaler


def test_the_recorded_norms_are_of_the_unscaled_gradients_and_are_what_clipping_uses():
    model, optimizer, scaler = _step_setup(scale=2.0**8)
    before = [p.detach().clone() for p in model.parameters()]
    unscaled = [p.grad.detach().double() / 2.0**8 for p in model.parameters()]
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in unscaled]))
    seen = {}
    optimizer_step(model, optimizer, None, scaler, lambda params, norms, total: seen.update(total=float(total)))
    assert seen["total"] == pytest.approx(float(expected), rel=1e-6)  # unscaled: 256x smaller than the raw grads
    assert seen["total"] > MAX_GRAD_NORM
    clip = MAX_GRAD_NORM / (seen["total"] + 1e-6)
    for p, p0, g in zip(model.parameters(), before, unscaled):  # SGD applied the gradients clipped by that norm
        assert torch.allclose(p.double(), p0.double() - 0.1 * g * clip, rtol=0, atol=1e-6)
    assert scaler.get_scale() == 2.0**8  # no overflow: the scale stays (growth only after 2000 good steps)


def test_an_overflowing_step_is_skipped_logged_and_not_recorded(caplog):
    model, optimizer, scaler = _step_setup(scale=2.0**12)
    next(model.parameters()).grad[0, 0, 0, 0] = float("inf")
    before = [p.detach().clone() for p in model.parameters()]
    seen = []
    with caplog.at_level(logging.WARNING, logger="yolofreeze.training.optim"):
        total = optimizer_step(model, optimizer, None, scaler, lambda *args: seen.append(args))
    assert total == float("inf") and not seen  # no norm recorded for a step that did not happen
    assert all(torch.equal(p, p0) for p, p0 in zip(model.parameters(), before))
    assert scaler.get_scale() == 2.0**11
    assert "optimizer step skipped: the float16 gradients overflowed" in caplog.text and "loss scale now 2048" in caplog.text


@pytest.mark.parametrize("amp, device, expected", [
    (None, "cpu", None), (True, "cpu", None), (None, "cuda", torch.float16), (False, "cuda", None),
    ("fp16", "cpu", torch.float16), ("bf16", "cpu", torch.bfloat16), ("off", "cpu", None)])
def test_amp_resolves_per_device(amp, device, expected):
    assert amp_dtype(amp, torch.device(device)) == expected


def test_amp_flags_reach_the_settings_and_contradictions_are_refused(capsys):
    assert parse_train_args(["--amp", "bf16"])[0].amp == "bf16"
    assert parse_train_args([])[0].amp is True and parse_train_args(["--no-amp"])[0].amp is False
    with pytest.raises(SystemExit) as raised:
        parse_train_args(["--amp", "fp16", "--no-amp"])
    assert raised.value.code == 2 and "--amp fp16 and --no-amp contradict" in capsys.readouterr().err


def test_an_fp16_run_on_cpu_records_the_steps_it_took_and_keeps_its_scaler_in_last_pt(tmp_path, capsys, caplog):
    data = write_demo_dataset(tmp_path / "demo", n_train=32, n_val=8)
    assert train_cli.main(["--data", str(data), "--weights", "none", "--amp", "fp16", "--epochs", "1", "--imgsz",
                           "64", "--batch", "8", "--nbs", "8", "--workers", "0", "--project", str(tmp_path), "--name",
                           "amp"]) == 0
    captured = capsys.readouterr()
    assert "AMP float16" in captured.out
    ckpt = torch.load(tmp_path / "amp" / "weights" / "last.pt", weights_only=True)
    assert ckpt["train"]["settings"]["amp"] == "fp16" and ckpt["train"]["ema_updates"] == 4  # one step per batch
    skipped = caplog.text.count("optimizer step skipped: the float16 gradients overflowed")
    assert ckpt["train"]["scaler"]["scale"] == 2.0**16 / 2**skipped  # halved at each skipped step
    rows = [line.split(",") for line in (tmp_path / "amp" / "grad_norms.csv").read_text().splitlines()[1:]]
    recorded = {int(row[0]) for row in rows}
    assert 0 < len(recorded) == 4 - skipped  # every step taken is recorded, no skipped one
    assert all(float(row[-1]) < float("inf") for row in rows)
