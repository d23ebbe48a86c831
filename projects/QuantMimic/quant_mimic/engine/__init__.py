from .setup import check_run_inputs
from .trainer import Trainer

__all__ = ["Trainer", "check_run_inputs"]
