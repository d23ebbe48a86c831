"""The deployment form of a trained detector: folded, traced networks and batched, sync-free inference.

``export_deployed`` / ``build_and_export`` write it (command: ``python -m quant_mimic_tools.deploy``);
``DeployedPredictor`` loads and runs it (see :mod:`.runtime`, which needs no training code).
"""

from .export import build_and_export, export_deployed
from .fold import fold_batch_norm
from .runtime import DeployedDetector, DeployedPredictor

__all__ = ["DeployedDetector", "DeployedPredictor", "build_and_export", "export_deployed", "fold_batch_norm"]
