"""Training tools behind the scripts: classification, segmentation and detection fine-tuning.

Built on Accelerate (one file runs on a CPU, one GPU, several GPUs or nodes) and Hugging Face ``datasets``;
the scripts are argparse over ``ClassificationConfig`` / ``SegmentationConfig`` / ``DetectionConfig``. Import
the pieces from their modules (``data``, ``coco_data``, ``optim``, ``metrics``, ``seg_head``, ``det_model``,
``exports``, ``checkpoint``, ``loop``); this package namespace keeps imports light.
"""

from .errors import InputError

__all__ = ["InputError"]
