"""Latency measurement: the parts a detector's inference is timed in, one timer, and a noise image to time on.

Every latency of the project (eager and deployed inference in :mod:`quant_mimic.analysis`, the benchmark's
training steps and ONNX sessions, the steps and test images of the main job's ``--estimate``) is
:func:`time_calls`: untimed warm-up calls, then timed calls, each started and ended by a wait for the device
(CUDA), medians.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .errors import QuantMimicInputError

# The parts of one inference, in order (eager: :func:`quant_mimic.analysis.staged_inference`; deployed:
# ``DeployedPredictor.model``'s laps):
#   preprocess   normalise + pad
#   backbone     backbone + FPN
#   rpn          RPN head, anchors, top-k, box decoding, NMS over proposals
#   roi_heads    ROIAlign + box head + predictor (R-FCN: PS-ROIAlign + voting)
#   postprocess  box decoding, score threshold, per-class NMS, rescale to the input size
PARTS = ("preprocess", "backbone", "rpn", "roi_heads", "postprocess")
# the parts' short names, for the columns of a printed table
PART_LABELS = {"preprocess": "preproc", "postprocess": "postproc"}

Lap = Callable[[str], None]


def synchronizer(device: torch.device | str) -> Callable[[], None]:
    """A function that waits for ``device`` (CUDA) before a clock is read; nothing to wait for on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@dataclass
class Timing:
    """What :func:`time_calls` measured: seconds of each timed call, per part, and what each returned."""

    totals: list[float] = field(default_factory=list)  # seconds, one per timed call
    parts: list[dict[str, float]] = field(default_factory=list)  # seconds per lapped part, one per call
    results: list[Any] = field(default_factory=list)  # what each timed call returned

    def median_s(self) -> float:
        """Median seconds of one call."""
        return statistics.median(self.totals)

    def median_ms(self, parts: tuple[str, ...] = PARTS) -> dict[str, float]:
        """Median milliseconds of ``total`` and of each of ``parts`` (0 for a part never lapped)."""
        latency = {"total": 1000 * self.median_s()}
        latency.update({p: 1000 * statistics.median(s.get(p, 0.0) for s in self.parts) for p in parts})
        return latency


def time_calls(
    fn: Callable[[Lap], Any], repeats: int, warmup: int = 0, device: torch.device | str = "cpu"
) -> Timing:
    """Call ``fn(lap)`` ``warmup`` times untimed, then ``repeats`` times timed.

    ``fn`` may call ``lap(part)`` at the end of each part of its work: the time since the call began or
    since the last lap is added to ``part``. Each call and each lap begins with a wait for ``device``
    (CUDA), so the times are those of the device's work.

    Raises:
        QuantMimicInputError: ``repeats`` < 1 or ``warmup`` < 0.
    """
    if repeats < 1 or warmup < 0:
        raise QuantMimicInputError(
            f"repeats is {repeats} and warmup {warmup}: use repeats >= 1, warmup >= 0."
        )
    sync = synchronizer(device)
    timing = Timing()
    clock = {"last": 0.0}  # when the running call began or last lapped
    seconds: dict[str, float] = {}

    def lap(part: str) -> None:
        sync()
        now = time.perf_counter()
        seconds[part] = seconds.get(part, 0.0) + now - clock["last"]
        clock["last"] = now

    for i in range(warmup + repeats):
        seconds.clear()
        sync()
        start = clock["last"] = time.perf_counter()
        result = fn(lap)
        sync()
        total = time.perf_counter() - start
        if i >= warmup:
            timing.totals.append(total)
            timing.parts.append(dict(seconds))
            timing.results.append(result)
    return timing


def random_image(
    height: int, width: int, channels: int = 3, device: torch.device | str = "cpu", seed: int = 0
) -> torch.Tensor:
    """A reproducible noise image, Tensor[channels, height, width] of whole 0-255 floats."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(channels, height, width, generator=generator) * 255).round().to(device)
