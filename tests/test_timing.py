"""quant_mimic.timing: the one timer (warm-up, timed calls, laps, medians) and the noise image."""

from __future__ import annotations

import time

import pytest
import torch

from quant_mimic.errors import QuantMimicInputError
from quant_mimic.timing import PARTS, random_image, time_calls


def test_warm_up_calls_are_not_timed_and_laps_add_up_to_the_call():
    calls = []

    def fn(lap):
        calls.append(len(calls))
        time.sleep(0.002)
        lap("backbone")
        time.sleep(0.001)
        lap("postprocess")
        return calls[-1]

    timing = time_calls(fn, repeats=3, warmup=2)
    assert calls == [0, 1, 2, 3, 4] and timing.results == [2, 3, 4]
    assert len(timing.totals) == 3
    for total, parts in zip(timing.totals, timing.parts):
        assert parts["backbone"] >= 0.002 and parts["postprocess"] >= 0.001
        assert sum(parts.values()) == pytest.approx(total, abs=1e-3)
    ms = timing.median_ms()
    assert list(ms) == ["total", *PARTS]
    assert ms["preprocess"] == ms["rpn"] == ms["roi_heads"] == 0 < ms["backbone"] < ms["total"]
    assert timing.median_s() == pytest.approx(ms["total"] / 1000)


@pytest.mark.parametrize("repeats, warmup", [(0, 1), (1, -1)])
def test_bad_counts_are_refused(repeats, warmup):
    with pytest.raises(QuantMimicInputError, match="repeats >= 1"):
        time_calls(lambda lap: None, repeats, warmup)


def test_random_image_is_reproducible_and_in_range():
    image = random_image(5, 7, channels=1, seed=3)
    assert image.shape == (1, 5, 7) and image.dtype == torch.float32
    assert torch.equal(image, random_image(5, 7, channels=1, seed=3))
    assert not torch.equal(random_image(5, 7), random_image(5, 7, seed=1))
    assert 0 <= image.min() and image.max() <= 255 and torch.equal(image, image.round())
