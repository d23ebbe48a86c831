from .checks import check_run
from .trainer import Trainer

__all__ = ["Trainer", "check_run"]
