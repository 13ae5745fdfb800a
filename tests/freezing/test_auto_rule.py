"""The adaptive freezing rule on crafted gradient histories (no model): a flat block freezes, a noisy one stops the
prefix, the prefix never skips a block nor passes the ceiling nor shrinks, warm-up and thin evidence decide nothing;
and the interval sums the trainer feeds it (per-batch mean gradient, closing, resume state)."""
from __future__ import annotations

import math

import pytest
import torch

from yolofreeze import build_model
from yolofreeze.freezing.auto import AutoRule, GradientIntervals, Interval, decide_freeze, plasticity

MEDIAN = AutoRule(ceiling=5)


def history(*measures: dict[int, float], warmup: tuple[bool, ...] = ()) -> list[Interval]:
    warm = list(warmup) + [False] * (len(measures) - len(warmup))
    return [Interval(k + 1, 4 * (k + 1), warm[k], m) for k, m in enumerate(measures)]


# r per block between the two intervals: 0: 0, 1: 0.01, 2: 0.9 (noisy), 3: 0.02, 4: 0.5, 22 (head): 0.4
PREVIOUS = {0: 1.0, 1: 2.0, 2: 1.0, 3: 1.0, 4: 2.0, 22: 5.0}
CURRENT = {0: 1.0, 1: 1.98, 2: 1.9, 3: 0.98, 4: 1.0, 22: 3.0}


def test_plasticity_is_the_relative_change_of_the_measure():
    assert plasticity(2.0, 1.5) == pytest.approx(0.25)
    assert plasticity(2.0, 2.5) == pytest.approx(0.25)
    assert plasticity(0.0, 0.0) == 0.0 and plasticity(0.0, 1.0) == math.inf


def test_flat_blocks_freeze_and_the_first_noisy_block_stops_the_prefix():
    decision = decide_freeze(history(PREVIOUS, CURRENT), 0, MEDIAN)
    assert decision.threshold == pytest.approx((0.02 + 0.4) / 2)  # median over every trainable block, head too
    assert decision.prefix_after == 2 and decision.changed
    assert [row["block"] for row in decision.evidence] == [0, 1, 2, 3, 4]
    assert [row["below"] for row in decision.evidence] == [True, True, False, True, False]
    assert decision.evidence[2]["measures"] == [1.0, 1.9] and decision.evidence[2]["r"] == pytest.approx(0.9)
    assert "block 2 is still plastic" in decision.reason


def test_the_prefix_never_skips_a_block():
    """Block 3 is flat, but block 2 before it is not: 3 stays trainable."""
    decision = decide_freeze(history(PREVIOUS, CURRENT), 0, MEDIAN)
    assert decision.prefix_after == 2 < 4


def test_the_ceiling_holds():
    flat = {b: 1.0 for b in range(23)}
    moving = {**flat, 22: 2.0, 15: 3.0}
    decision = decide_freeze(history(flat, moving), 0, AutoRule(ceiling=3, threshold=0.5))
    assert decision.prefix_after == 3
    at_ceiling = decide_freeze(history(flat, moving), 3, AutoRule(ceiling=3, threshold=0.5))
    assert not at_ceiling.changed and "ceiling" in at_ceiling.reason


def test_the_prefix_grows_from_where_it_is_and_never_shrinks():
    """Frozen blocks have no measures; a decision from prefix 2 looks at blocks 2… only, and a plastic block 2
    keeps the prefix at 2 (it cannot go back)."""
    previous = {b: v for b, v in PREVIOUS.items() if b >= 2}
    current = {b: v for b, v in CURRENT.items() if b >= 2}
    decision = decide_freeze(history(previous, current), 2, MEDIAN)
    assert decision.prefix_after == 2 and not decision.changed
    assert [row["block"] for row in decision.evidence] == [2, 3, 4]


def test_a_numeric_threshold_replaces_the_median():
    decision = decide_freeze(history(PREVIOUS, CURRENT), 0, AutoRule(ceiling=5, threshold=0.95))
    assert decision.threshold == 0.95 and decision.prefix_after == 5


def test_blocks_without_parameters_pass():
    """Blocks 10 and 11 (upsample, concat) have no gradient: they neither stop the prefix nor need evidence."""
    previous = {**{b: 1.0 for b in range(10)}, 12: 1.0, 13: 3.0, 22: 1.0}
    current = {**{b: 1.0 for b in range(10)}, 12: 1.0, 13: 1.0, 22: 2.0}
    decision = decide_freeze(history(previous, current), 0, AutoRule(ceiling=20, threshold=0.1))
    assert decision.prefix_after == 13
    assert [row["r"] for row in decision.evidence if row["block"] in (10, 11)] == [None, None]


def test_warm_up_makes_no_decision():
    flat = {b: 1.0 for b in (0, 1, 2, 22)}
    moved = {**flat, 22: 3.0}
    during = decide_freeze(history(flat, moved, flat, moved, warmup=(True, True, True, True)), 0, MEDIAN)
    assert not during.changed and "warm-up" in during.reason and during.evidence == ()
    # warm-up intervals are not evidence: one interval after warm-up is not enough either
    one_after = decide_freeze(history(flat, moved, flat, warmup=(True, True)), 0, MEDIAN)
    assert not one_after.changed and "1 of 2 intervals" in one_after.reason


def test_only_intervals_after_warm_up_are_compared():
    """A flat pair after warm-up decides, whatever the warm-up intervals before it did."""
    wild = {0: 100.0, 1: 0.1, 2: 5.0, 22: 1.0}
    flat = {0: 1.0, 1: 1.0, 2: 2.0, 22: 1.0}
    moved = {0: 1.0, 1: 1.0, 2: 1.0, 22: 3.0}
    decision = decide_freeze(history(wild, flat, moved, warmup=(True,)), 0, AutoRule(ceiling=3, threshold=0.3))
    assert decision.prefix_after == 2
    assert [row["measures"] for row in decision.evidence] == [[1.0, 1.0], [1.0, 1.0], [2.0, 1.0]]


def test_a_single_interval_is_not_evidence():
    decision = decide_freeze(history(PREVIOUS), 0, MEDIAN)
    assert not decision.changed and "1 of 2 intervals" in decision.reason


def test_interval_and_threshold_flags_parse():
    assert AutoRule.parse("1", "median", 10) == AutoRule(10)
    assert AutoRule.parse("20s", "0.25", 9) == AutoRule(9, 20, "step", 0.25)
    assert AutoRule.parse("3 epochs", "median", 9).interval == 3
    for interval, threshold in (("0", "median"), ("x", "median"), ("1", "none"), ("1", "-0.5"), ("1", "inf")):
        with pytest.raises(ValueError, match="--auto-"):
            AutoRule.parse(interval, threshold, 9)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("yolov8n", nc=2)


def _step(model, intervals, grads: dict[str, float], batches: int, warming: bool, epoch: int) -> None:
    params = dict(model.named_parameters())
    for name, value in grads.items():
        params[name].grad = torch.full_like(params[name], value)
    intervals.add([params[name] for name in grads], batches, warming, epoch)


def test_the_measure_is_the_norm_of_the_mean_gradient_per_batch(model):
    """Two steps summing 1 and 3 batches: G = ||g1 + g2|| / 4 per block; signs that cancel lower it."""
    intervals = GradientIntervals(model, AutoRule(ceiling=10))
    w0, b1 = "model.0.conv.weight", "model.1.bn.bias"
    n0, n1 = model.get_parameter(w0).numel(), model.get_parameter(b1).numel()
    _step(model, intervals, {w0: 1.0, b1: 2.0}, 1, False, 1)
    _step(model, intervals, {w0: 3.0, b1: -2.0}, 3, False, 1)
    assert intervals.end_epoch(1)
    (interval,) = intervals.history
    assert interval.epoch == 1 and interval.step == 2 and not interval.warmup
    assert interval.measures[0] == pytest.approx(4.0 * math.sqrt(n0) / 4)
    assert interval.measures[1] == pytest.approx(0.0)
    assert set(interval.measures) == {0, 1} and n1 > 0
    assert not intervals.end_epoch(1)  # nothing new to decide on


def test_step_intervals_close_when_full_and_carry_the_warm_up_flag(model):
    intervals = GradientIntervals(model, AutoRule(ceiling=10, interval=2, unit="step"))
    for k, warming in enumerate((True, False, False, False, False)):
        _step(model, intervals, {"model.0.conv.weight": 1.0 + k}, 1, warming, 1)
    assert [(i.step, i.warmup) for i in intervals.history] == [(2, True), (4, False)]
    assert intervals.steps == 1  # the fifth step waits in the open interval
    assert intervals.end_epoch(1)  # step intervals do not close at the epoch's end, but two closed since


def test_the_state_round_trips_and_continues_identically(model):
    rule = AutoRule(ceiling=10, interval=3, unit="step")
    grads = [{"model.0.conv.weight": 0.5 * k, "model.2.cv1.conv.weight": 1.0 / k} for k in range(1, 6)]
    whole, resumed = GradientIntervals(model, rule), GradientIntervals(model, rule)
    for k, g in enumerate(grads):
        _step(model, whole, g, 2, k == 0, 1)
    for g in grads[:4]:
        _step(model, resumed, g, 2, g is grads[0], 1)
    state = resumed.state_dict()
    resumed = GradientIntervals(model, rule)
    resumed.load_state_dict(state)
    _step(model, resumed, grads[4], 2, False, 1)
    assert resumed.state_dict()["history"] == whole.state_dict()["history"]
    assert all(torch.equal(resumed.sums[n], whole.sums[n]) for n in whole.sums) and set(resumed.sums) == set(whole.sums)


def test_relative_warm_up_decides_on_shares_where_a_change_common_to_all_blocks_cancels():
    """During warm-up every block's gradient halves (the schedule) and block 1's alone doubles besides: on shares
    only block 1 moved. Skipping warm-up decides nothing; relative freezes block 0 and stops at block 1."""
    previous = {0: 1.0, 1: 1.0, 2: 2.0, 3: 4.0, 22: 1.0}
    current = {0: 0.5, 1: 1.0, 2: 1.0, 3: 2.0, 22: 0.5}
    warm = history(previous, current, warmup=(True, True))
    assert not decide_freeze(warm, 0, AutoRule(ceiling=4, threshold=0.1)).changed
    decision = decide_freeze(warm, 0, AutoRule(ceiling=4, threshold=0.1, warmup="relative"))
    assert decision.prefix_after == 1 and [row["below"] for row in decision.evidence] == [True, False, True, True]
    # block 0's share: its G over the L2 combination of the trainable blocks' G, before and after
    assert decision.evidence[0]["measures"] == pytest.approx([1 / math.sqrt(23), 0.5 / math.sqrt(6.5)])
    # in absolute terms block 0 halved: r 0.5, above 0.1, and the rule without shares would not freeze it
    assert plasticity(previous[0], current[0]) == 0.5
    with pytest.raises(ValueError, match="--auto-warmup"):
        AutoRule(ceiling=4, warmup="sometimes")
