"""QuantMimic: Quantization Mimic (Wei et al., ECCV 2018) as a Detectron2 project."""

__version__ = "0.1.0"
