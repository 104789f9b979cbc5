"""Training tools behind ``scripts/train_classification.py`` and ``scripts/finetune_segmentation.py``.

Built on Accelerate (one file runs on a CPU, one GPU, several GPUs or nodes) and Hugging
Face ``datasets``; the scripts are argparse over :class:`ClassificationConfig` /
:class:`SegmentationConfig`. Import the pieces from their modules (``data``, ``optim``,
``metrics``, ``seg_head``, ``checkpoint``, ``loop``); this package namespace keeps imports light.
"""

from .errors import InputError

__all__ = ["InputError"]
