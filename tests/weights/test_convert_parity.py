"""Every scale of v8 and v10: oracle model → release-format .pt → our converter → same numbers as the oracle."""
from __future__ import annotations

import copy

import pytest
import torch

from oracle import V8_NAMES, V10_NAMES, build_oracle, max_output_differences, save_release
from yolofreeze import load_model
from yolofreeze.weights.checkpoints import convert_official, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("name", V8_NAMES + V10_NAMES)
def test_converted_release_matches_oracle(name, tmp_path):
    oracle = build_oracle(name)
    path = save_release(oracle, tmp_path / f"{name}.pt", use_ema=name.endswith(("n", "x")))
    reference = copy.deepcopy(oracle).half().float()  # the weights exactly as stored in the release (fp16)
    ours = convert_official(path)

    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in oracle.parameters())
    theirs_sd = reference.state_dict()
    ours_sd = ours.state_dict()
    assert set(ours_sd) == set(theirs_sd)
    assert all(ours_sd[k].shape == theirs_sd[k].shape for k in ours_sd)
    assert ours.stride.tolist() == reference.stride.tolist()
    assert ours.names == [reference.names[i] for i in range(80)]

    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    differences = max_output_differences(reference, ours, x)
    assert max(differences.values()) <= 1e-4, differences


def test_our_checkpoint_roundtrip_with_weights_only(tmp_path):
    oracle = build_oracle("yolov10n")
    model = convert_official(save_release(oracle, tmp_path / "official.pt"))
    save_checkpoint(model, tmp_path / "ours.pt")
    raw = torch.load(tmp_path / "ours.pt", map_location="cpu", weights_only=True)  # must not need pickled classes
    assert raw["arch"] == "yolov10n" and raw["nc"] == 80 and raw["stride"] == [8.0, 16.0, 32.0]
    assert all(v.dtype == torch.float32 for v in raw["state_dict"].values() if v.is_floating_point())
    assert load_checkpoint(tmp_path / "ours.pt")["names"] == model.names
    reloaded = load_model(tmp_path / "ours.pt")
    official = load_model(tmp_path / "official.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reloaded(x), official(x))
