"""Model cards: one template per family in ``MODEL_CARDS/templates``, rendered per checkpoint.

The numbers in a card (parameters, parameters added by FDConv, GMACs) are measured on the
model being published, never typed in, so a card cannot drift from its weights. The Hugging
Face metadata (``library_name: timm``, tags, license, datasets, ``model-index``) is built with
``huggingface_hub.ModelCardData`` so the Hub parses it exactly as it would its own.
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..models._published import HUB_ORG
from .stats import card_stats

__all__ = ["TEMPLATE_DIR", "model_family", "render_card"]

# ``fdconv_zoo/hub/model_cards`` links to ``MODEL_CARDS/templates`` (like catalogue.json -> hub/).
TEMPLATE_DIR = Path(__file__).with_name("model_cards")
_FAMILIES = (("resnet", "resnet"), ("convnext", "convnext"), ("swin", "swin"))
_DATASET_NAMES = {"imagenet-1k": "ImageNet-1k", "imagenet-22k": "ImageNet-22k", "coco": "COCO",
                  "ade20k": "ADE20K", "cityscapes": "Cityscapes"}
_METRIC_NAMES = {"top1": ("accuracy", "Top-1 accuracy"), "top5": ("top_5_accuracy", "Top-5 accuracy")}
_TAG_DATASETS = {"in1k": "imagenet-1k", "in22k": "imagenet-22k", "in12k": "imagenet-12k"}


def model_family(architecture: str) -> str:
    """``resnet`` / ``convnext`` / ``swin`` for an architecture name (picks the card template)."""
    for prefix, family in _FAMILIES:
        if architecture.startswith(prefix):
            return family
    raise ValueError(f"no model card template for '{architecture}': families are "
                     f"{[f for _, f in _FAMILIES]} (add MODEL_CARDS/templates/<family>.md)")








def _split_front_matter(text: str, path: Path) -> tuple[dict, str]:
    import yaml

    if not text.startswith("---\n"):
        raise ValueError(f"model card template {path} must start with YAML front matter ('---')")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end]) or {}, text[end + 5:]


def _provenance(converted_from: str | None, trained_with: Mapping[str, Any] | None, architecture: str) -> str:
    if converted_from:
        hub_id = converted_from.removeprefix("hf-hub:")
        link = f"[`{hub_id}`](https://huggingface.co/{hub_id})" if "/" in hub_id and not Path(hub_id).exists() \
            else f"`{hub_id}`"
        return (f"Converted, not retrained, from the timm checkpoint {link} with `fdconv-zoo convert "
                f"--checkpoint {hub_id} --model {architecture}`: each eligible kernel's FFT becomes its `dft_weight`, "
                "KSM and FBM start at their neutral init. The converted network computes the source network's "
                "outputs (function preserving, max relative error <= 1e-5); fine-tune it to use the dynamic "
                "frequency modulation.")
    if trained_with:
        args = " ".join(trained_with.get("args", []))
        commit = f" at commit `{trained_with['commit']}`" if trained_with.get("commit") else ""
        script = trained_with["script"]
        return f"Trained with `{script}`{commit}:\n\n```bash\npython {script} {args}\n```"
    return "Provenance not recorded."


def _metrics_section(metrics: Mapping[str, Mapping[str, float]], converted_from: str | None) -> str:
    if not metrics:
        note = (" As a conversion it reproduces the source checkpoint's outputs, so its accuracy is the source's."
                if converted_from else "")
        return "No evaluation recorded for this checkpoint." + note
    rows = ["| dataset | metric | value |", "|---|---|---|"]
    for dataset, values in metrics.items():
        for key, value in values.items():
            rows.append(f"| {_DATASET_NAMES.get(dataset, dataset)} | {_METRIC_NAMES.get(key, (key, key))[1]} | "
                        f"{value:g} |")
    return "\n".join(rows)


def _datasets(tag: str, metrics: Mapping[str, Any], datasets: Sequence[str] | None) -> list[str]:
    if datasets:
        return list(datasets)
    found = list(metrics)
    suffix = tag.rsplit("_", 1)[-1]
    if suffix in _TAG_DATASETS and _TAG_DATASETS[suffix] not in found:
        found.append(_TAG_DATASETS[suffix])
    return found


def _feature_channels(model: nn.Module) -> str:
    info = getattr(model, "feature_info", None)
    try:
        return ", ".join(str(f["num_chs"]) for f in info)  # timm's raw feature_info: list of dicts
    except (TypeError, KeyError):
        return "see model.feature_info"


def render_card(model: nn.Module, *, tag: str, architecture: str | None = None, repo_id: str | None = None,
                converted_from: str | None = None, trained_with: Mapping[str, Any] | None = None,
                metrics: Mapping[str, Mapping[str, float]] | None = None, datasets: Sequence[str] | None = None,
                license: str | None = None, stats: Mapping[str, Any] | None = None,
                template: str | os.PathLike | None = None, org: str = HUB_ORG, title: str | None = None) -> str:
    """The ``README.md`` of one checkpoint: family template + measured numbers + provenance + usage."""
    from huggingface_hub import EvalResult, ModelCardData

    architecture = architecture or model.pretrained_cfg["architecture"]
    repo_id = repo_id or f"{org}/{architecture}.{tag}"
    metrics = dict(metrics or {})
    path = Path(template) if template else TEMPLATE_DIR / f"{model_family(architecture)}.md"
    meta, body = _split_front_matter(path.read_text(encoding="utf-8"), path)
    stats = dict(stats) if stats is not None else card_stats(model)

    meta["library_name"] = "timm"
    meta["license"] = license or model.pretrained_cfg.get("license") or meta.get("license")
    meta["tags"] = list(dict.fromkeys([*meta.get("tags", []), architecture]))
    found = _datasets(tag, metrics, datasets)
    if found:
        meta["datasets"] = found
    if converted_from and "/" in converted_from and not Path(converted_from).exists():
        meta["base_model"] = converted_from.removeprefix("hf-hub:").split("@", 1)[0]
    eval_results = [
        EvalResult(task_type="image-classification", dataset_type=dataset,
                   dataset_name=_DATASET_NAMES.get(dataset, dataset), dataset_split="validation",
                   metric_type=_METRIC_NAMES.get(key, (key, key))[0],
                   metric_name=_METRIC_NAMES.get(key, (key, key))[1], metric_value=value)
        for dataset, values in metrics.items() for key, value in values.items()]
    card_data = ModelCardData(model_name=repo_id if eval_results else None, eval_results=eval_results or None, **meta)

    base_arch = architecture.removesuffix("_fdconv")
    fd = [m for m in model.modules() if hasattr(m, "kernel_num") and hasattr(m, "dft_weight")]
    values = dict(
        title=title or f"Model card for {repo_id.split('/', 1)[-1]}", repo_id=repo_id, architecture=architecture,
        tag=tag, model_name=f"{architecture}.{tag}", base_arch=base_arch, org=org,
        params_m=f"{stats['params'] / 1e6:.2f}", extra_params_m=f"{stats['extra_params'] / 1e6:.3f}",
        gmacs=f"{stats['gmacs']:.2f}", input_size="x".join(str(s) for s in stats["input_size"]),
        kernel_num=str(fd[0].kernel_num) if fd else "n/a",
        provenance=_provenance(converted_from, trained_with, architecture),
        metrics_section=_metrics_section(metrics, converted_from), feature_channels=_feature_channels(model),
    )
    try:
        rendered = string.Template(body).substitute(values)
    except (KeyError, ValueError) as err:
        raise ValueError(f"model card template {path} uses an unknown placeholder {err}; "
                         f"available: {sorted(values)}") from err
    return f"---\n{card_data.to_yaml()}\n---\n{rendered}"
