"""The QuantMimic trainer: detectron2's DefaultTrainer (its own training step; a ``QuantMimicRCNN``
returns ``loss_mimic`` among its losses), plus, for a ``QuantMimicRCNN`` model, the frozen teacher's
weights and checks and the student-only export."""

from __future__ import annotations

import functools
import logging
import os

import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator
from torch.nn.parallel import DistributedDataParallel

from ..compat import OptimizerStateInCheckpoints, cpu_capable_ddp, forward_after_backward
from ..config import QUANT_MIMIC_ARCH
from ..errors import QuantMimicInputError
from ..evaluation import PascalVOCPerClassEvaluator, WiderFaceEvaluator
from ..modeling.meta_arch import QuantMimicRCNN
from .exact_resume import RandomStateHook, fast_forward, kept_random_states
from .export import StudentExportHook
from .mapper import ImageErrorNamingMapper
from .teacher import load_teacher_weights, quick_teacher_ap
from .trusted_writes import make_saves_atomic, whole_line_metrics

logger = logging.getLogger(__name__)


class Trainer(OptimizerStateInCheckpoints, DefaultTrainer):
    """DefaultTrainer that runs on CPU processes too (GLOO) and trains Quantization Mimic students."""

    def __init__(self, cfg: CfgNode, teacher_cfg: CfgNode | None = None):
        """``teacher_cfg``: a QuantMimicRCNN's teacher config as the run read it (default: read from
        MODEL.QUANT_MIMIC.TEACHER_CONFIG)."""
        # DefaultTrainer.__init__ calls self.build_model(cfg): this trainer's passes the teacher config on
        self.build_model = functools.partial(type(self).build_model, teacher_cfg=teacher_cfg)
        with cpu_capable_ddp():
            super().__init__(cfg)
        forward_after_backward(self)
        make_saves_atomic(self.checkpointer)  # checkpoints, then last_checkpoint, renamed in when whole
        if isinstance(self.bare_model, QuantMimicRCNN):
            self.prepare_teacher(cfg, self.bare_model)

    @classmethod
    def build_model(cls, cfg: CfgNode, teacher_cfg: CfgNode | None = None):
        """detectron2's ``build_model``; a QuantMimicRCNN's teacher is built from ``teacher_cfg`` where
        given (the config the run read once), else from MODEL.QUANT_MIMIC.TEACHER_CONFIG."""
        if teacher_cfg is None or cfg.MODEL.META_ARCHITECTURE != QUANT_MIMIC_ARCH:
            return super().build_model(cfg)
        model = QuantMimicRCNN(cfg, teacher_cfg=teacher_cfg).to(torch.device(cfg.MODEL.DEVICE))
        logger.info(f"Model:\n{model}")
        return model

    @property
    def bare_model(self):
        """The model itself, without the DistributedDataParallel wrapper of a multi-process run."""
        model = self.model
        return model.module if isinstance(model, DistributedDataParallel) else model

    @staticmethod
    def prepare_teacher(cfg: CfgNode, model: QuantMimicRCNN) -> None:
        """Load the teacher's weights and refuse a teacher that cannot detect anything."""
        qm = cfg.MODEL.QUANT_MIMIC
        load_teacher_weights(model.teacher.model, qm.TEACHER_WEIGHTS, qm.TEACHER_CONFIG)
        if qm.TEACHER_CHECK_IMAGES > 0 and cfg.DATASETS.TEST:
            dataset = cfg.DATASETS.TEST[0]
            output_dir = os.path.join(cfg.OUTPUT_DIR, "teacher_check")
            ap = quick_teacher_ap(
                model.teacher.model, model.teacher.cfg, dataset, qm.TEACHER_CHECK_IMAGES, output_dir
            )
            logger.info(f"Teacher AP on the first {qm.TEACHER_CHECK_IMAGES} images of {dataset}: {ap:.1f}")
            if not ap >= qm.TEACHER_MIN_AP:
                raise QuantMimicInputError(
                    f"The teacher {qm.TEACHER_WEIGHTS} reaches AP {ap:.1f} on {dataset}, below "
                    f"MODEL.QUANT_MIMIC.TEACHER_MIN_AP={qm.TEACHER_MIN_AP}: train it longer or pass the "
                    "right checkpoint."
                )

    def build_writers(self):
        """detectron2's writers, with metrics.json appended in whole lines."""
        return whole_line_metrics(super().build_writers(), self.cfg.OUTPUT_DIR)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        """detectron2's train loader, whose mapper names an image it cannot read."""
        return build_detection_train_loader(cfg, mapper=ImageErrorNamingMapper(DatasetMapper(cfg, True)))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        """detectron2's test loader, whose mapper names an image it cannot read."""
        mapper = ImageErrorNamingMapper(DatasetMapper(cfg, False))
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    def resume_from(self, path: str) -> None:
        """Resume from the trainer checkpoint ``path`` (model, optimizer, scheduler, iteration, random
        states), as ``resume_or_load(resume=True)`` does from the one ``last_checkpoint`` names."""
        self.checkpointer.load(path)
        self.start_iter = self.iter + 1
        fast_forward(self._trainer, self.start_iter)

    def resume_or_load(self, resume: bool = True) -> None:
        """detectron2's, and on resume the data loader continues where the interrupted run was."""
        super().resume_or_load(resume=resume)
        if resume and self.start_iter > 0:
            fast_forward(self._trainer, self.start_iter)

    def build_hooks(self):
        hooks = super().build_hooks()
        hooks.insert(0, RandomStateHook())
        if isinstance(self.bare_model, QuantMimicRCNN):
            hooks.append(StudentExportHook(self.cfg))
        return hooks

    @classmethod
    def test(cls, cfg: CfgNode, model, evaluators=None):
        """detectron2's evaluation, which leaves torch's, Python's and numpy's random states as it found
        them, so that a resumed run draws what the uninterrupted one did (see ``exact_resume.py``)."""
        with kept_random_states():
            return super().test(cfg, model, evaluators)

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None
    ) -> DatasetEvaluator:
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if evaluator_type == "coco":
            return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_folder)
        if evaluator_type == "pascal_voc":
            return PascalVOCPerClassEvaluator(dataset_name, output_dir=output_folder)
        if evaluator_type == "wider_face":
            return WiderFaceEvaluator(dataset_name, output_dir=output_folder)
        raise QuantMimicInputError(
            f"Dataset '{dataset_name}' has evaluator_type {evaluator_type!r}, for which QuantMimic has no "
            "evaluator: use a COCO-format, Pascal VOC or WIDER FACE data set in DATASETS.TEST."
        )
