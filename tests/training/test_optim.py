"""The recipe (yolofreeze.training.optim) against the oracle's own training loop, iteration for iteration: SGD, AdamW,
``auto``, Adam and RMSprop, linear and cosine schedules.

The oracle side is Ultralytics' ``BaseTrainer`` itself: its ``_setup_train`` (freezing, accumulate, weight
decay scaling, ``build_optimizer`` with the config's ``optimizer``, the LambdaLR schedule, ModelEMA) and its
``_do_train`` (warm-up, accumulation, ``optimizer_step`` with clipping, EMA update) run as shipped; only data
loading, validation, saving and plotting are replaced (:func:`reference_loop`). Our recipe runs in lockstep
from a callback of that loop, on the same batch with the same stand-in loss (a sum of squares of the
train-mode outputs: loss parity is tested elsewhere), and the two are compared after every iteration.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import yolofreeze.training.optim as optim
from oracle import build_oracle, save_release, ultralytics
from yolofreeze.weights.checkpoints import convert_official
from yolofreeze.training.optim import (ModelEMA, TrainConfig, accumulate, apply_schedule, build_optimizer,
                                      optimizer_step, param_groups, resolve_auto, step_due)

TOLERANCE = 1e-5
LOSS_SCALE = 1 / 4096  # puts yolov8n's gradient norms around the clipping threshold (10): both regimes occur


# ------------------------------------------------------------------------------------- models and stand-in losses

def oracle_loss(preds: dict) -> torch.Tensor:
    """Stand-in loss on the oracle's train-mode output ``{"boxes": (B, 64, A), "scores": (B, nc, A), ...}``."""
    return (preds["boxes"].pow(2).sum() + preds["scores"].pow(2).sum()) * LOSS_SCALE


def our_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """The same loss on our train-mode output: per level ``(B, 64 + nc, H, W)``."""
    return sum(level.pow(2).sum() for level in model(batch["img"])) * LOSS_SCALE


class SumOfSquares:
    """The oracle model's criterion (what ``DetectionModel.loss`` calls): ``(loss, named parts)``."""

    def __call__(self, preds: dict, batch: dict):
        loss = oracle_loss(preds)
        return loss, {"ssq": loss.detach()}


class Tiny(nn.Module):
    """Conv (weight, bias) → BatchNorm (weight, bias): every group, for cheap runs of many schedules.

    Called with a batch ``{"img": (B, 3, H, W), "gain": float}`` it returns ``(loss, parts)`` like the
    oracle's models; ``gain`` moves the gradient norm below or above the clipping threshold.
    """

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.criterion = None  # read by the reference loop after each epoch

    def forward(self, batch: dict):
        loss = self.bn(self.conv(batch["img"])).pow(2).mean() * batch["gain"]
        return loss, {"ssq": loss.detach()}


def tiny_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return model(batch)[0]


def tiny_batches(nb: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    return [{"img": torch.rand(2, 3, 8, 8, generator=gen), "gain": (5.0, 30.0)[i % 2]} for i in range(nb)]


# ------------------------------------------------------------------------------------------------------ the two sides

class OurRecipe:
    """Our side, one iteration at a time: the loop in yolofreeze/optim.py's docstring."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, nb: int, loss, trainable=None):
        self.model, self.cfg, self.nb, self.loss = model.train(), cfg, nb, loss
        self.optimizer = build_optimizer(model, cfg, trainable)
        self.ema, self.last_step, self.accumulate, self.grad_norms = ModelEMA(model), -1, None, []

    def iteration(self, iteration: int, epoch: int, batch: dict) -> None:
        self.accumulate = apply_schedule(self.optimizer, iteration, epoch, self.cfg, self.nb)
        self.loss(self.model, batch).backward()
        if step_due(iteration, self.last_step, self.accumulate):
            self.grad_norms.append(optimizer_step(self.model, self.optimizer, self.ema))
            self.last_step = iteration


class FixedLoader(list):
    """A list of batches with the DataLoader attributes the reference trainer reads."""

    def __init__(self, batches: list[dict], batch_size: int):
        super().__init__(batches)
        self.batch_size, self.num_workers, self.drop_last = batch_size, 0, False
        self.dataset = self.sampler = range(len(batches) * batch_size)


def reference_loop(model: nn.Module, batches: list[dict], cfg: TrainConfig, after_iteration, save_dir: Path):
    """Run the oracle's ``BaseTrainer._do_train`` for ``cfg.epochs`` epochs of ``batches``; return the trainer.

    ``after_iteration(trainer, iteration, epoch, batch)`` is called at the end of each of its iterations.
    The trainer is made without ``BaseTrainer.__init__`` (which needs a dataset and a run directory) by
    setting what it sets; data loading, validation, saving and plotting are no-ops.
    """
    ultralytics()
    from ultralytics.cfg import get_cfg
    from ultralytics.engine.trainer import BaseTrainer

    class ReferenceLoop(BaseTrainer):
        def __init__(self):  # the attributes BaseTrainer.__init__ sets, for a CPU run
            hyper = {k: getattr(cfg, k) for k in ("epochs", "batch", "nbs", "lr0", "lrf", "momentum",
                                                  "weight_decay", "warmup_epochs", "warmup_momentum",
                                                  "warmup_bias_lr")}
            self.args = get_cfg(overrides=dict(hyper, imgsz=64, optimizer=cfg.optimizer, cos_lr=cfg.cos_lr, amp=False,
                                               plots=False, val=False, close_mosaic=0, device="cpu", workers=0))
            self.device, self.accelerator, self.world_size, self.ddp = torch.device("cpu"), None, 0, False
            self.validator, self.metrics, self.plots, self.save_dir = None, None, {}, save_dir
            self.batch_size, self.epochs, self.start_epoch, self.resume = cfg.batch, cfg.epochs, 0, False
            self.callbacks = {"on_train_batch_end": [self.batch_end]}
            self.model, self.data = model, {"names": {0: "a", 1: "b"}, "nc": 2, "train": "", "val": ""}
            self.ema = self.lf = self.optimizer = self.scheduler = None
            self.best_fitness = self.fitness = self.loss = self.tloss = None
            self.loss_names, self.plot_idx, self.nan_recovery_attempts, self.iteration = (), [], 0, 0

        def batch_end(self, trainer):
            after_iteration(self, self.iteration, self.epoch, batches[self.iteration - len(batches) * self.epoch])
            self.iteration += 1

        def get_dataloader(self, dataset_path, batch_size=16, rank=0, mode="train"):
            return FixedLoader(batches, batch_size)

        def get_validator(self):
            return SimpleNamespace(metrics=SimpleNamespace(keys=[]))

        def validate(self):
            return {}, None

        def save_metrics(self, metrics):
            pass

        def save_model(self):
            return False

        def final_eval(self):
            pass

    trainer = ReferenceLoop()
    trainer._do_train()
    return trainer


@dataclass
class Lockstep:
    """Per iteration, (reference, ours): lr and momentum per group, accumulate, steps so far; state differences."""

    lr: list[tuple[list[float], list[float]]] = dataclasses.field(default_factory=list)
    momentum: list[tuple[list[float], list[float]]] = dataclasses.field(default_factory=list)
    accumulate: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    steps: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    weights: list[float] = dataclasses.field(default_factory=list)
    ema: list[float] = dataclasses.field(default_factory=list)

    def mismatches(self) -> list[str]:
        """What differs (lr, momentum, accumulate and step counts exactly; states beyond TOLERANCE)."""
        found = [f"{name} differs at iterations {bad}" for name in ("lr", "momentum", "accumulate", "steps")
                 if (bad := [n for n, (a, b) in enumerate(getattr(self, name)) if a != b])]
        found += [f"{name} differ by up to {max(values):.3g}" for name in ("weights", "ema")
                  if max(values := getattr(self, name)) > TOLERANCE]
        return found


def max_difference(reference: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between two state dicts with the same keys (integer entries must be equal)."""
    assert reference.keys() == ours.keys()
    worst = 0.0
    for key, theirs in reference.items():
        if theirs.is_floating_point():
            worst = max(worst, (theirs - ours[key]).abs().max().item())
        else:
            assert torch.equal(theirs, ours[key]), key
    return worst


def run_lockstep(reference_model: nn.Module, ours: OurRecipe, batches: list[dict], cfg: TrainConfig,
                 save_dir: Path) -> tuple[Lockstep, object]:
    """Train both from the same state on the same batches, comparing after each iteration."""
    record = Lockstep()

    def after_iteration(trainer, iteration, epoch, batch):
        ours.iteration(iteration, epoch, batch)
        theirs, mine = trainer.optimizer.param_groups, ours.optimizer.param_groups
        record.lr.append(([g["lr"] for g in theirs], [g["lr"] for g in mine]))
        record.momentum.append(([_momentum(g) for g in theirs], [_momentum(g) for g in mine]))
        record.accumulate.append((trainer.accumulate, ours.accumulate))
        record.steps.append((trainer.ema.updates, ours.ema.updates))
        record.weights.append(max_difference(trainer.model.state_dict(), ours.model.state_dict()))
        record.ema.append(max_difference(trainer.ema.ema.state_dict(), ours.ema.module.state_dict()))

    trainer = reference_loop(reference_model, batches, cfg, after_iteration, save_dir)
    return record, trainer


def _momentum(group: dict):
    """SGD's and RMSprop's momentum, Adam's betas."""
    return group["momentum"] if "momentum" in group else group["betas"]


SCHEDULE_KEYS = {"params", "lr", "initial_lr", "name", "label", "lr_mult", "param_group", "use_muon"}


def group_settings(optimizer: torch.optim.Optimizer) -> tuple[str, list[dict]]:
    """The optimiser's class and each group's settings (weight decay, nesterov, betas, eps …), schedule aside."""
    return type(optimizer).__name__, [{k: v for k, v in g.items() if k not in SCHEDULE_KEYS}
                                      for g in optimizer.param_groups]


# ----------------------------------------------------------------------------------------- yolov8n, end to end

@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[nn.Module, Path]:
    """A seeded oracle yolov8n (nc=2) as stored in its release file (fp16), and that file."""
    oracle = build_oracle("yolov8n", nc=2)
    path = save_release(oracle, tmp_path_factory.mktemp("optim") / "yolov8n.pt")
    return copy.deepcopy(oracle).half().float(), path


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW", "auto"])
@pytest.mark.parametrize("batch", [16, 64], ids=["accumulate4", "accumulate1"])
def test_yolov8n_training_matches_the_reference_loop(release, batch, optimizer, tmp_path):
    oracle, path = release
    reference = copy.deepcopy(oracle)
    reference.criterion = SumOfSquares()
    gen = torch.Generator().manual_seed(0)
    batches = [{"img": torch.rand(2, 3, 64, 64, generator=gen)} for _ in range(4)]
    # warm-up: iterations 0..4 (min(3, epochs - 1) epochs of 4 batches); the reference resolves auto itself
    cfg = TrainConfig(epochs=2, batch=batch, optimizer=optimizer)
    resolved = resolve_auto(cfg, nc=2, images=len(batches) * batch)  # its loader's dataset size
    assert resolved.optimizer == ("AdamW" if optimizer == "auto" else optimizer)
    ours = OurRecipe(convert_official(path), resolved, len(batches), our_loss)

    record, trainer = run_lockstep(reference, ours, batches, cfg, tmp_path)

    assert record.mismatches() == []
    assert group_settings(trainer.optimizer) == group_settings(ours.optimizer)
    assert [steps for steps, _ in record.steps] == ([1, 1, 2, 2, 2, 2, 3, 3] if batch == 16 else list(range(1, 9)))
    if batch == 64 and optimizer == "SGD":  # the stand-in loss gives steps with and without clipping
        assert min(ours.grad_norms) < optim.MAX_GRAD_NORM < max(ours.grad_norms)


# ------------------------------------------------------------------------------------ schedules, on a tiny model

SCHEDULES = {  # (epochs, batches per epoch, warmup_epochs, batch)
    "ramp-to-4": (4, 4, 3.0, 16),
    "warmup-capped-at-epochs-1": (3, 5, 3.0, 64),
    "fractional-warmup-accumulate3": (2, 3, 0.5, 24),
    "one-epoch-no-warmup": (1, 6, 3.0, 16),
    "accumulate-capped-by-run": (2, 1, 3.0, 8),
    "no-warmup-accumulate13": (3, 4, 0.0, 5),
    "accumulate2-rounded": (3, 7, 1.3, 40),
}


def tiny_lockstep(schedule: tuple, tmp_path: Path, spoil=None, **recipe) -> tuple[Lockstep, OurRecipe, object]:
    epochs, nb, warmup_epochs, batch = schedule
    cfg = TrainConfig(epochs=epochs, batch=batch, warmup_epochs=warmup_epochs, **recipe)
    ours = OurRecipe(Tiny(), cfg, nb, tiny_loss)
    if spoil is not None:
        spoil(ours)
    record, trainer = run_lockstep(Tiny(), ours, tiny_batches(nb), cfg, tmp_path)
    return record, ours, trainer


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_schedule_matches_the_reference_loop(schedule, tmp_path):
    record, ours, trainer = tiny_lockstep(schedule, tmp_path)
    assert record.mismatches() == []
    assert group_settings(trainer.optimizer) == group_settings(ours.optimizer)


RECIPES = {  # optimiser and schedule variants, on the warm-up-to-the-end schedule and one without warm-up
    "adam-cosine": dict(optimizer="Adam", cos_lr=True),
    "adamw-lrf0.2-decay": dict(optimizer="AdamW", lrf=0.2, weight_decay=0.05),
    "rmsprop": dict(optimizer="RMSprop", lr0=0.001),
    "sgd-cosine-warmup-values": dict(cos_lr=True, warmup_momentum=0.5, warmup_bias_lr=0.05, momentum=0.9),
}


@pytest.mark.parametrize("schedule", [SCHEDULES["ramp-to-4"], SCHEDULES["no-warmup-accumulate13"]],
                         ids=["ramp-to-4", "no-warmup"])
@pytest.mark.parametrize("recipe", RECIPES.values(), ids=RECIPES.keys())
def test_optimisers_and_schedules_match_the_reference_loop(recipe, schedule, tmp_path):
    record, ours, trainer = tiny_lockstep(schedule, tmp_path, **recipe)
    assert record.mismatches() == []
    assert group_settings(trainer.optimizer) == group_settings(ours.optimizer)


@pytest.mark.parametrize("nc, images, epochs", [(2, 80, 30), (17, 1200, 100), (80, 118287, 100)])
def test_auto_resolves_as_the_reference_decides(nc, images, epochs):
    ultralytics()
    from ultralytics.engine.trainer import BaseTrainer

    cfg = TrainConfig(epochs=epochs, batch=16, optimizer="auto")
    iterations = math.ceil(images / max(cfg.batch, cfg.nbs)) * epochs
    args = SimpleNamespace(lr0=cfg.lr0, warmup_bias_lr=cfg.warmup_bias_lr, momentum=cfg.momentum)
    reference = BaseTrainer.build_optimizer(SimpleNamespace(args=args, data={"nc": nc}), build_oracle("yolov8n", nc=nc),
                                            name="auto", iterations=iterations)
    ours = resolve_auto(cfg, nc, images)
    assert ours.warmup_bias_lr == args.warmup_bias_lr == 0.0  # both start the bias warm-up at zero
    lr = reference.param_groups[0]["lr"]
    if iterations <= optim.AUTO_SGD_ITERATIONS:
        assert type(reference).__name__ == ours.optimizer == "AdamW"
        assert ours.lr0 == lr and (ours.momentum, 0.999) == reference.param_groups[0]["betas"]
    else:  # the pinned reference's MuSGD (SGD plus Muon on matrices, some groups at 3x lr) is not ours: plain SGD
        lrs, momenta = ({g[key] for g in reference.param_groups} for key in ("lr", "momentum"))
        assert ours.optimizer == "SGD" and ours.lr0 == min(lrs) == 0.01 and {ours.momentum} == momenta == {0.9}


def test_an_unresolved_auto_and_an_unknown_optimizer_are_refused():
    with pytest.raises(ValueError, match="resolved for the dataset first"):
        build_optimizer(Tiny(), TrainConfig(optimizer="auto"))
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="Lion")
    assert optim.optimizer_name("rmsprop") == optim.optimizer_name("RMSProp") == "RMSprop"


def _no_nesterov(ours):
    for group in ours.optimizer.param_groups:
        group["nesterov"] = False


def _decay_on_norm_weights(ours):
    groups = ours.optimizer.param_groups
    groups[0]["weight_decay"], groups[1]["weight_decay"] = groups[1]["weight_decay"], groups[0]["weight_decay"]


def _weights_and_biases_swapped(ours):
    groups = ours.optimizer.param_groups
    groups[0]["params"], groups[2]["params"] = groups[2]["params"], groups[0]["params"]


def _bias_warms_up_from_zero(ours):
    ours.optimizer.param_groups[2]["name"] = "weight"


def _ema_of_parameters_only(ours):
    ema = ours.ema

    @torch.no_grad()
    def update(model):
        ema.updates += 1
        for average, current in zip(ema.module.parameters(), model.parameters(), strict=True):
            average.lerp_(current, 1.0 - ema.decay_at(ema.updates))

    ema.update = update


@pytest.mark.parametrize("spoil", [_no_nesterov, _decay_on_norm_weights, _weights_and_biases_swapped,
                                   _bias_warms_up_from_zero, _ema_of_parameters_only, "no clipping"])
def test_lockstep_comparison_catches_a_wrong_recipe(spoil, tmp_path, monkeypatch):
    if spoil == "no clipping":
        monkeypatch.setattr(optim, "MAX_GRAD_NORM", math.inf)
        spoil = None
    record, _, _ = tiny_lockstep(SCHEDULES["ramp-to-4"], tmp_path, spoil)
    assert record.mismatches() != []


# ------------------------------------------------------------------------------------ groups, freezing, pieces

def parameter_names(model: nn.Module, groups: list[dict]) -> list[set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [{names[id(p)] for p in group["params"]} for group in groups]


@pytest.mark.parametrize("name", ["yolov8n", "yolov10n"])
def test_param_groups_hold_what_the_reference_build_optimizer_puts_there(name, tmp_path):
    ultralytics()
    from ultralytics.engine.trainer import BaseTrainer

    oracle = build_oracle(name, nc=2)
    ours = convert_official(save_release(oracle, tmp_path / f"{name}.pt"))
    cfg = TrainConfig(batch=24)
    reference = BaseTrainer.build_optimizer(SimpleNamespace(), oracle, name="SGD", lr=cfg.lr0,
                                            momentum=cfg.momentum, decay=optim.scaled_weight_decay(cfg))
    theirs, mine = parameter_names(oracle, reference.param_groups), parameter_names(ours, param_groups(ours, None, cfg))

    dfl = {n for n, _ in ours.named_parameters() if n.endswith(".dfl.conv.weight")}
    assert len(dfl) == 1 and theirs[0] - mine[0] == dfl  # the reference lists the frozen DFL projection, unused
    assert theirs[1:] == mine[1:] and mine[0] <= theirs[0]
    assert [g["weight_decay"] for g in reference.param_groups] == [5e-4 * 24 * 3 / 64, 0.0, 0.0]
    assert [g["weight_decay"] for g in param_groups(ours, None, cfg)] == [5e-4 * 24 * 3 / 64, 0.0, 0.0]


@pytest.mark.parametrize("optimizer", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_unfreezing_gives_new_parameters_fresh_state_with_every_optimiser(optimizer):
    model = Tiny()
    cfg = TrainConfig(epochs=2, batch=64, warmup_epochs=0.0, optimizer=optimizer)
    optimizer_ = build_optimizer(model, cfg, trainable=lambda name: name.startswith("bn."))
    batches = tiny_batches(2)
    for iteration, batch in enumerate(batches):
        apply_schedule(optimizer_, iteration, 0, cfg, nb=2)
        tiny_loss(model, batch).backward()
        optimizer_step(model, optimizer_, None)
    kept = {name: {k: v.clone() for k, v in optimizer_.state[p].items()} for name, p in model.named_parameters()
            if name.startswith("bn.")}
    optim.regroup(optimizer_, model, lambda name: True, cfg)  # unfreeze the convolution
    assert model.conv.weight not in optimizer_.state  # no state until its first step: fresh moments / momentum
    apply_schedule(optimizer_, 2, 1, cfg, nb=2)
    tiny_loss(model, batches[0]).backward()
    optimizer_step(model, optimizer_, None)
    fresh, stayed = optimizer_.state[model.conv.weight], optimizer_.state[model.bn.weight]
    assert fresh and set(fresh) == set(stayed)
    if "step" in fresh:  # Adam's bias correction counts each parameter's own steps: 1 for the new one, 3 for the rest
        assert float(fresh["step"]) == 1.0 and float(stayed["step"]) == 3.0
    for name, state in kept.items():  # the parameters that stayed kept their state and moved on from it
        param = dict(model.named_parameters())[name]
        assert all(not torch.equal(optimizer_.state[param][k], v) for k, v in state.items() if k != "step")


def test_parameters_a_plan_freezes_are_left_out_and_untouched():
    model = Tiny()
    frozen = model.conv.weight.detach().clone()
    cfg = TrainConfig(epochs=2, batch=64, warmup_epochs=0.0)
    optimizer = build_optimizer(model, cfg, trainable=lambda name: name != "conv.weight")
    assert parameter_names(model, optimizer.param_groups) == [set(), {"bn.weight"}, {"conv.bias", "bn.bias"}]

    for iteration, batch in enumerate(tiny_batches(3)):
        apply_schedule(optimizer, iteration, 0, cfg, nb=3)
        tiny_loss(model, batch).backward()
        trained_grads = torch.cat([p.grad.flatten() for p in (model.bn.weight, model.conv.bias, model.bn.bias)])
        model.conv.weight.grad.mul_(1e6)  # a frozen parameter's gradient must not count in the clipped norm
        norm = optimizer_step(model, optimizer, None)
        assert norm == pytest.approx(trained_grads.norm().item(), rel=1e-6)
    assert torch.equal(model.conv.weight, frozen) and model.conv.weight not in optimizer.state


def test_no_trainable_parameter_is_an_error():
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(Tiny(), lambda name: False, TrainConfig())


def test_a_grad_scaler_is_unscaled_before_clipping_and_skips_overflowed_steps():
    cfg = TrainConfig(warmup_epochs=0.0)
    batch = tiny_batches(2)[1]  # gain 30: the norm is clipped
    plain, scaled = Tiny(), Tiny()
    plain_opt, scaled_opt = build_optimizer(plain, cfg), build_optimizer(scaled, cfg)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)

    tiny_loss(plain, batch).backward()
    scaler.scale(tiny_loss(scaled, batch)).backward()
    plain_norm = optimizer_step(plain, plain_opt, None)
    scaled_norm = optimizer_step(scaled, scaled_opt, None, scaler)
    assert plain_norm > optim.MAX_GRAD_NORM and scaled_norm == pytest.approx(plain_norm, rel=1e-6)
    assert max_difference(plain.state_dict(), scaled.state_dict()) <= 1e-7

    before = copy.deepcopy(scaled.state_dict())
    scaler.scale(tiny_loss(scaled, batch)).backward()
    scaled.conv.weight.grad[0, 0, 0, 0] = math.inf
    assert not math.isfinite(optimizer_step(scaled, scaled_opt, None, scaler))
    assert all(torch.equal(before[k], v) for k, v in scaled.state_dict().items() if k.endswith(("weight", "bias")))


def test_ema_decay_ramp_is_the_reference_one():
    ultralytics()
    from ultralytics.utils.torch_utils import ModelEMA as ReferenceEMA

    model = Tiny()
    theirs, ours = ReferenceEMA(model), ModelEMA(model)
    assert [ours.decay_at(n) for n in (1, 10, 2000, 10**6)] == [theirs.decay(n) for n in (1, 10, 2000, 10**6)]
    assert not ours.module.training and not any(p.requires_grad for p in ours.module.parameters())


def test_train_config_defaults_are_the_reference_ones():
    ultralytics()
    from ultralytics.cfg import get_cfg

    reference = get_cfg()
    ours = TrainConfig().to_dict()
    theirs = {name: getattr(reference, name) for name in ours}
    # the layer-freezing paper's protocol, on purpose: SGD and no augmentation (train.py --optimizer auto and
    # --augment light / the single flags give the reference's)
    paper = {"optimizer": ("SGD", "auto"), "fliplr": (0.0, 0.5), "hsv_h": (0.0, 0.015), "hsv_s": (0.0, 0.7),
             "hsv_v": (0.0, 0.4), "mosaic": (0.0, 1.0), "translate": (0.0, 0.1), "scale": (0.0, 0.5)}
    assert {name: (ours[name], theirs[name]) for name in ours if ours[name] != theirs[name]} == paper
    assert accumulate(TrainConfig()) == 4 and TrainConfig(**ours) == TrainConfig()


@pytest.mark.parametrize("bad", [dict(batch=0), dict(epochs=2.5), dict(lr0=0.0), dict(momentum=0.0),
                                 dict(momentum=1.0), dict(warmup_epochs=-1.0), dict(weight_decay=-1e-4),
                                 dict(fliplr=1.5), dict(hsv_s=-0.1), dict(optimizer="sgd"), dict(mosaic=2.0),
                                 dict(scale=1.0), dict(close_mosaic=-1)])
def test_train_config_rejects_bad_values(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=rf"training setting {name} \(--{name.replace('_', '-')}\) must be"):
        TrainConfig(**bad)


def test_train_config_is_frozen_and_pieces_reject_impossible_counts():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().lr0 = 0.1
    with pytest.raises(ValueError, match="at least one batch"):
        optim.warmup_iterations(TrainConfig(), 0)
    with pytest.raises(ValueError, match="counts batches from 0"):
        optim.lr_at(-1, 0, TrainConfig(), 10)
