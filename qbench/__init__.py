"""qbench: quantization studies of pre-trained language models, one Hydra command per experiment."""

__version__ = "0.1.0"
