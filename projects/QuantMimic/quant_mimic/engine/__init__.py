from .setup import build_config, check_run_inputs
from .trainer import Trainer

__all__ = ["Trainer", "build_config", "check_run_inputs"]
