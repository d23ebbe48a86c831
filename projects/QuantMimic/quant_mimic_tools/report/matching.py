"""The paper's Fig. 5: per-RoI matching ratio between teacher and (adapted) student RoI features.

For a trained QuantMimicRCNN run, the student's top RPN proposals on val images are pooled from the
teacher's and the student's feature maps exactly as in training (same pooler, same adaptation conv),
and compared the way the run's mimic loss compares them: full precision for plain mimic, both sides
quantized for Quantization Mimic. The ratio of an RoI is the share of its elements with
``|f_t - f_s| < MODEL.QUANT_MIMIC.MATCH_THRESHOLD`` (paper: 0.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model

from .figure import plt, save_figure
from .runs import Run


@torch.no_grad()
def matching_ratios(run: Run, dataset: str, num_images: int = 32, rois_per_image: int = 64) -> np.ndarray:
    """float[num_images * rois_per_image] (fewer if RPN returns fewer proposals): the matching ratio of
    each RoI, for a QuantMimicRCNN run's final checkpoint (teacher included)."""
    cfg = run.training_config(device="cpu")
    cfg.MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES = 0
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(run.output_dir / "model_final.pth"))
    model.eval()
    mapper = DatasetMapper(cfg, is_train=False)
    ratios = []
    for d in DatasetCatalog.get(dataset)[:num_images]:
        inputs = [mapper(d)]
        student = model.student
        images = student.preprocess_image(inputs)
        features = student.backbone(images.tensor)
        proposals, _ = student.proposal_generator(images, features, None)
        boxes = [p.proposal_boxes[:rois_per_image] for p in proposals]
        maps = model.student_maps(images.tensor, features)
        ratios.append(model.mimic_loss.matching_ratio(model.mimic_features(inputs, maps, boxes)))
    return torch.cat(ratios).numpy()


def matching_histogram(runs: Sequence[Run], dataset: str, path: Path, **kwargs) -> dict[str, float]:
    """Write a PNG histogram of per-RoI matching ratios, one series per QuantMimicRCNN run (plain mimic
    = full precision, QM = quantized). Returns the mean ratio of each run."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    bins = np.linspace(0.0, 1.0, 21)
    means = {}
    for run in runs:
        values = matching_ratios(run, dataset, **kwargs)
        means[run.name] = float(values.mean())
        weights = np.full(len(values), 1.0 / max(len(values), 1))
        ax.hist(
            values, bins=bins, weights=weights, alpha=0.55, label=f"{run.name} (mean {values.mean():.2f})"
        )
    ax.set_xlabel("matching ratio of an RoI (share of elements with |f_t - f_s| < threshold)")
    ax.set_ylabel("share of RoIs")
    ax.set_title("Teacher vs student RoI features on val images (paper Fig. 5)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return means
