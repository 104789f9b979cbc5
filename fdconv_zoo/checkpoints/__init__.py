"""Checkpoints offline: read, check, map and write weight files (no network; the Hub side is :mod:`fdconv_zoo.hub`)."""

from .conversion import ConvertResult, check_state_dict, convert_checkpoint, convert_state_dict, detect_layout
from .files import file_sha256, load_checkpoint_file, save_safetensors, verify_sha256

__all__ = ["file_sha256", "verify_sha256", "load_checkpoint_file", "save_safetensors", "check_state_dict",
           "detect_layout", "ConvertResult", "convert_state_dict", "convert_checkpoint"]
