"""The memory breakdown of a training step: saved activations counted once per storage, gradients and momentum
measured, and freezing a longer prefix holding strictly fewer activations, on YOLOv8 and YOLOv10."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from yolofreeze import build_model
from yolofreeze.freezing.plan import FreezePlan
from yolofreeze.training.loss import build_loss
from yolofreeze.freezing.memory import MemoryBreakdown, SavedTensorCounter, format_memory, profile_training_step
from yolofreeze.training.optim import TrainConfig, build_optimizer

STRATEGIES = ("none", "fr1", "fr2", "fr3")  # each freezes a strictly longer prefix than the one before
FP32 = 4  # bytes per value


def synthetic_batch(imgsz: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, imgsz, imgsz, generator=generator)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 0, 0.3, 0.6, 0.2, 0.2], [1, 2, 0.7, 0.3, 0.25, 0.3]])
    return images, targets


def profile_plan(arch: str, spec: str) -> tuple[nn.Module, MemoryBreakdown]:
    """A fresh seeded ``arch`` with the plan ``spec`` applied, and its profile on the synthetic batch."""
    torch.manual_seed(0)
    model = build_model(arch, nc=3)
    plan = FreezePlan.parse(spec, model)
    plan.apply(model)
    images, targets = synthetic_batch()
    breakdown = profile_training_step(model, build_loss(model), images, targets,
                                      lambda m: build_optimizer(m, TrainConfig(), plan.trainable),
                                      plan.set_train_mode)
    return model, breakdown


@pytest.fixture(scope="module", params=["yolov8n", "yolov10n"])
def profiles(request) -> dict[str, tuple[nn.Module, MemoryBreakdown]]:
    return {spec: profile_plan(request.param, spec) for spec in STRATEGIES}


def test_saved_activations_fall_strictly_as_the_frozen_prefix_grows(profiles):
    saved = [profiles[spec][1].saved_activations_bytes for spec in STRATEGIES]
    assert saved == sorted(saved, reverse=True) and len(set(saved)) == len(saved), dict(zip(STRATEGIES, saved))
    assert saved[-1] > 0  # the head still trains and so still saves its inputs


def test_gradients_and_momentum_are_exactly_the_trainable_parameters(profiles):
    for spec, (model, breakdown) in profiles.items():
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) * FP32
        every = sum(p.numel() for p in model.parameters()) * FP32
        assert breakdown.trainable_parameters_bytes == trainable, spec
        assert breakdown.gradients_bytes == trainable, spec
        assert breakdown.optimizer_state_bytes == trainable, spec  # Nesterov SGD: one momentum buffer each
        assert breakdown.parameters_bytes == every, spec
        assert breakdown.estimated_total_bytes == every + 2 * trainable + breakdown.saved_activations_bytes
        assert breakdown.peak_bytes is None and breakdown.device == "cpu"
        assert (breakdown.batch, breakdown.imgsz) == (2, 128)
    trainable = [profiles[spec][1].trainable_parameters_bytes for spec in STRATEGIES]
    assert trainable == sorted(trainable, reverse=True) and len(set(trainable)) == len(trainable)


def test_the_callers_model_and_random_state_are_untouched():
    torch.manual_seed(0)
    model = build_model("yolov8n", nc=3).eval()
    plan = FreezePlan.parse("fr1", model)
    plan.apply(model)
    marked = model.model[22].cv2[0][0].conv.weight
    marked.grad = torch.ones_like(marked)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    images, targets = synthetic_batch()
    criterion = build_loss(model)  # draws: its DFL convolution is initialised randomly before being overwritten
    rng = torch.get_rng_state()

    def train_mode_that_draws(network):  # a draw inside the step (as dropout would make) must not leak out
        torch.rand(100)
        return plan.set_train_mode(network)

    profile_training_step(model, criterion, images, targets,
                          lambda m: build_optimizer(m, TrainConfig(), plan.trainable), train_mode_that_draws)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # weights and BN statistics
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert torch.equal(marked.grad, torch.ones_like(marked))
    assert all(p.grad is None for p in model.parameters() if p is not marked)
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng)


class TwoConvs(nn.Module):
    """conv(3 → 4) → batch-norm → SiLU → conv(4 → 2), each with its own output storage."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(4)
        self.act = nn.SiLU()
        self.second = nn.Conv2d(4, 2, 1, bias=False)

    def forward(self, x):
        return self.second(self.act(self.norm(self.first(x))))


def square_sum(outputs, targets, image_hw):
    return outputs.square().sum(), {}


@pytest.mark.parametrize("frozen_first", [False, True])
def test_a_small_network_saves_the_bytes_counted_by_hand(frozen_first):
    torch.manual_seed(0)
    model = TwoConvs()
    if frozen_first:
        model.first.requires_grad_(False)
        model.norm.requires_grad_(False)
    images = torch.rand(2, 3, 8, 8)
    pixels = 2 * 8 * 8  # batch x height x width

    def set_train_mode(network):
        network.train()
        if frozen_first:
            network.norm.eval()

    breakdown = profile_training_step(model, square_sum, images, torch.zeros(0, 6),
                                      lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad],
                                                                lr=0.1, momentum=0.9), set_train_mode)
    # Hand count. Trained: first conv's input is the caller's batch (not counted); batch-norm saves its input (the
    # first conv's output, 4 channels) and the batch mean and inverse std (4 values each); SiLU its input (4
    # channels); the second conv its input (SiLU's output, 4 channels); square its input (2 channels).
    # Frozen first half: nothing needs a gradient before the second conv, which still saves its input.
    trained_half = (4 + 2) * pixels * FP32
    expected = trained_half if frozen_first else trained_half + (4 + 4) * pixels * FP32 + 2 * 4 * FP32
    assert breakdown.saved_activations_bytes == expected
    trainable = 4 * 2 * FP32 if frozen_first else (4 * 3 * 9 + 4 + 4 + 4 * 2) * FP32
    assert breakdown.gradients_bytes == breakdown.optimizer_state_bytes == trainable
    assert breakdown.parameters_bytes == (4 * 3 * 9 + 4 + 4 + 4 * 2) * FP32


def test_a_storage_saved_twice_or_through_views_counts_once():
    leaf = torch.rand(5, 6, requires_grad=True)
    with SavedTensorCounter() as counter:
        doubled = leaf * 2  # saves nothing from leaf's storage (multiplies by a number)
        outputs = [leaf * leaf,  # saves leaf twice
                   doubled[:, :3] * doubled[:, 3:]]  # saves two views of doubled's storage
    assert counter.saved_bytes == leaf.nbytes + doubled.nbytes  # 30 + 30 values
    assert all(output.grad_fn is not None for output in outputs)  # their graphs (and saved tensors) are alive


def test_storages_of_excluded_tensors_are_not_counted():
    weight = nn.Parameter(torch.rand(4, 4))
    x = torch.rand(3, 4, requires_grad=True)
    with SavedTensorCounter(exclude=[weight]) as counter:
        out = x @ weight.t()  # saves x and a view of weight
    assert counter.saved_bytes == x.nbytes
    assert out.requires_grad


def test_a_graph_freed_inside_the_block_no_longer_counts():
    x = torch.rand(8, 8, requires_grad=True)
    with SavedTensorCounter() as counter:
        kept = (x + 1).exp()  # exp saves its result: one 8 x 8 storage
        discarded = (x + 2).sigmoid()  # sigmoid too, but its graph dies with the tensor
        del discarded
    assert counter.saved_bytes == kept.nbytes


def test_the_pack_hook_keeps_the_storage_itself_not_a_copy():
    x = torch.rand(4, 4, requires_grad=True)
    with SavedTensorCounter():
        y = x * 3
        z = y.exp()
    assert z.grad_fn._saved_result.data_ptr() == z.data_ptr()  # the very storage, not a copy
    z.sum().backward()
    assert torch.allclose(x.grad, 3 * z.detach())


def test_breakdown_round_trips_through_json_and_formats_in_mib():
    breakdown = MemoryBreakdown(device="cpu", batch=8, imgsz=640, parameters_bytes=2 * 2**20,
                                trainable_parameters_bytes=2**20, gradients_bytes=2**20, optimizer_state_bytes=2**20,
                                saved_activations_bytes=4 * 2**20, peak_bytes=None)
    data = json.loads(json.dumps(breakdown.to_dict()))
    assert data["estimated_total_bytes"] == 8 * 2**20
    assert MemoryBreakdown.from_dict(data) == breakdown
    lines = format_memory(breakdown).splitlines()
    rows = {line[:20].strip(): line[20:].split() for line in lines[2:]}
    assert rows["saved activations"] == ["4.00", "50.0%"]
    assert rows["gradients"] == ["1.00", "12.5%"]
    assert rows["of which trainable"] == ["1.00"]
    assert rows["estimated total"] == ["8.00", "100.0%"]
    assert lines[-1].endswith("not measured on CPU (estimate = sum)")
    measured = format_memory(MemoryBreakdown.from_dict({**data, "device": "cuda:0", "peak_bytes": 10 * 2**20}))
    assert measured.splitlines()[-1].split() == ["peak", "10.00", "125.0%", "measured", "(CUDA)"]
    with pytest.raises(ValueError, match="lacks saved_activations_bytes"):
        MemoryBreakdown.from_dict({k: v for k, v in data.items() if k != "saved_activations_bytes"})


@pytest.mark.parametrize("images, targets, message", [
    (torch.rand(2, 1, 64, 64), torch.zeros(0, 6), r"images must be a float tensor \(B, 3, H, W\), got \(2, 1, 64"),
    (torch.zeros(2, 3, 64, 64, dtype=torch.uint8), torch.zeros(0, 6), "images must be a float tensor"),
    (torch.rand(2, 3, 64, 64), torch.zeros(3, 5), r"targets must be a tensor \(M, 6\)"),
])
def test_a_malformed_batch_is_refused(images, targets, message):
    model = TwoConvs()
    with pytest.raises(ValueError, match=message):
        profile_training_step(model, square_sum, images, targets, lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
                              nn.Module.train)
