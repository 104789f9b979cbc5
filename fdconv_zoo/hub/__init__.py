"""The Hugging Face Hub: pull checkpoints with offline guidance, publish them with a card and a catalogue entry."""

from .download import (
    CARD_NAME,
    CONFIG_NAME,
    HUB_FILES,
    WEIGHTS_NAME,
    convert_from_hub,
    create_model,
    download_weights,
    hub_error_guidance,
)
from .publish import PushResult, load_hub_folder, push_to_hub, register_catalogue_tags, save_for_hub, verify_hub_folder

__all__ = ["WEIGHTS_NAME", "CONFIG_NAME", "CARD_NAME", "HUB_FILES", "hub_error_guidance", "download_weights",
           "create_model", "convert_from_hub", "save_for_hub", "load_hub_folder", "verify_hub_folder", "PushResult",
           "push_to_hub", "register_catalogue_tags"]
