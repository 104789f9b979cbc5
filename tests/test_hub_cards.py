"""Model cards: Hugging Face metadata, measured numbers, provenance, usage that starts with ``import fdconv_zoo``."""

from __future__ import annotations

import pytest
import timm
import torch
import yaml
from huggingface_hub import ModelCard

import fdconv_zoo  # noqa: F401  (registers the models)
from fdconv_zoo.hub.cards import TEMPLATE_DIR, model_family, render_card
from fdconv_zoo.hub.stats import card_stats

SMALL = dict(num_classes=10, fd_include=["layer1.*"])


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    return timm.create_model("resnet18_fdconv", **SMALL).eval()


def _split(card: str) -> tuple[dict, str]:
    _, front, body = card.split("---\n", 2)
    return yaml.safe_load(front), body


def test_templates_exist_per_family():
    assert TEMPLATE_DIR.resolve().name == "templates" and TEMPLATE_DIR.resolve().parent.name == "MODEL_CARDS"
    for family in ("resnet", "convnext", "swin"):
        assert (TEMPLATE_DIR / f"{family}.md").is_file()
    assert model_family("swin_tiny_patch4_window7_224_fdconv") == "swin"
    with pytest.raises(ValueError, match="no model card template"):
        model_family("vit_base_fdconv")


def test_numbers_are_measured(small_model):
    plain = timm.create_model("resnet18", num_classes=10)
    n_plain = sum(p.numel() for p in plain.parameters())
    stats = card_stats(small_model, input_size=(3, 64, 64))
    assert stats["params"] == sum(p.numel() for p in small_model.parameters())
    assert stats["extra_params"] == stats["params"] - n_plain > 0  # counted on the FD model alone, exactly
    plain_gmacs = card_stats(plain, input_size=(3, 64, 64))["gmacs"]
    assert stats["input_size"] == [3, 64, 64] and plain_gmacs > 0
    assert abs(stats["gmacs"] - plain_gmacs) / plain_gmacs < 0.2  # same convs, per sample, plus small KSM/FBM work


def test_converted_card_metadata_and_usage(small_model):
    stats = dict(params=11_300_000, extra_params=123_456, gmacs=1.234, input_size=[3, 224, 224])
    card = render_card(small_model, tag="fft_a1_in1k", converted_from="timm/resnet18.a1_in1k", stats=stats,
                       metrics={"imagenet-1k": {"top1": 71.49, "top5": 90.07}})
    meta, body = _split(card)
    assert meta["library_name"] == "timm" and meta["license"] == "apache-2.0"
    assert {"timm", "fdconv_zoo", "image-classification", "resnet18_fdconv"} <= set(meta["tags"])
    assert meta["datasets"] == ["imagenet-1k"] and meta["base_model"] == "timm/resnet18.a1_in1k"
    (result,) = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == "fdconv-zoo/resnet18_fdconv.fft_a1_in1k"
    assert [(m["type"], m["value"]) for m in result["metrics"]] == [("accuracy", 71.49), ("top_5_accuracy", 90.07)]
    parsed = ModelCard(card)  # huggingface_hub reads the model-index back
    assert [r.metric_value for r in parsed.data.eval_results] == [71.49, 90.07]
    assert "11.30 M (0.123 M added by FDConv over `resnet18`)" in body and "| GMACs | 1.23 at 3x224x224" in body
    assert "Converted, not retrained, from the timm checkpoint [`timm/resnet18.a1_in1k`]" in body
    assert "| ImageNet-1k | Top-1 accuracy | 71.49 |" in body
    code = body.split("```python\n", 1)[1]
    assert code.startswith("import fdconv_zoo"), "usage must start with `import fdconv_zoo`"
    assert 'timm.create_model("hf-hub:fdconv-zoo/resnet18_fdconv.fft_a1_in1k", pretrained=True)' in code
    assert "$" not in body.replace("$ ", ""), "unrendered placeholder"


def test_trained_card_without_metrics(small_model):
    stats = dict(params=1, extra_params=1, gmacs=1.0, input_size=[3, 224, 224])
    card = render_card(small_model, tag="fd_e100_in1k", stats=stats,
                       trained_with={"script": "scripts/train.py", "args": ["--epochs", "100"], "commit": "abc1234"})
    meta, body = _split(card)
    assert "model-index" not in meta and "base_model" not in meta and meta["datasets"] == ["imagenet-1k"]
    assert "Trained with `scripts/train.py` at commit `abc1234`" in body
    assert "python scripts/train.py --epochs 100" in body and "No evaluation recorded" in body


@pytest.mark.parametrize("arch", ["convnext_tiny_fdconv", "swin_tiny_patch4_window7_224_fdconv"])
def test_other_family_templates_render(small_model, arch):
    stats = dict(params=1, extra_params=1, gmacs=1.0, input_size=[3, 224, 224])
    card = render_card(small_model, tag="fft_in1k", architecture=arch, converted_from="timm/x.in1k", stats=stats)
    meta, body = _split(card)
    assert arch in meta["tags"] and body.split("```python\n", 1)[1].startswith("import fdconv_zoo")
    assert f"hf-hub:fdconv-zoo/{arch}.fft_in1k" in body

