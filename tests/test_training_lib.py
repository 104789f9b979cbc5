"""Unit tests of fdconv_zoo.training: data validation, sampling, optimizer groups, metrics, checkpoints, heads."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from _training_helpers import load_script, read_log, reset_accelerate
from PIL import Image

from fdconv_zoo.training.checkpoint import find_latest_checkpoint, list_checkpoints, resolve_resume, save_checkpoint
from fdconv_zoo.training.data import (
    KeyedDataset,
    ResumableSampler,
    load_image_folder,
    load_segmentation_folder,
    seeded_rng,
)
from fdconv_zoo.training.errors import InputError
from fdconv_zoo.training.metrics import confusion_matrix, iou_from_confusion, topk_correct
from fdconv_zoo.training.modeling import check_model_name, create_model, export_model, vanilla_twin
from fdconv_zoo.training.optim import build_optimizer, cosine_schedule, param_groups
from fdconv_zoo.training.seg_head import create_segmentation_model, sliding_window_logits, whole_image_logits
from fdconv_zoo.training.toydata import make_image_folder, make_segmentation_folder
from fdconv_zoo.training.transforms import SegTrainTransform

FD_SMALL = dict(fd_kernel_num=4)


# ---------------------------------------------------------------------------------------------------------------
# optimizer and schedule


def test_param_groups_no_decay_on_norms_biases_and_fd_heads():
    model = create_model("resnet18_fdconv", num_classes=3, **FD_SMALL)
    groups = {g["weight_decay"]: set(g["names"]) for g in param_groups(model, 0.05)}
    decay, no_decay = groups[0.05], groups[0.0]
    assert "layer1.0.conv1.dft_weight" in decay            # the FDW spectrum is the kernel: decayed
    assert "conv1.weight" in decay and "fc.weight" in decay
    assert "layer1.0.conv1.KSM_Global.fc.weight" in no_decay        # 4-D, but an attention head
    assert "layer1.0.conv1.KSM_Global.kernel_fc.weight" in no_decay
    assert "layer1.0.conv1.KSM_Local.conv.weight" in no_decay
    assert "layer1.0.conv1.FBM.freq_weight_conv_list.0.weight" in no_decay
    assert "bn1.weight" in no_decay and "fc.bias" in no_decay
    assert not any(("KSM_" in n or ".FBM." in n) for n in decay)
    assert decay.isdisjoint(no_decay)
    assert len(decay | no_decay) == sum(1 for _ in model.parameters())


def test_build_optimizer_lr_multipliers_and_cosine_schedule():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    opt = build_optimizer(model, lr=1.0, weight_decay=0.1, lr_mults=[("1.", 10.0)])
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == [1.0, 1.0, 10.0, 10.0]
    sched = cosine_schedule(opt, total_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"] / (10.0 if opt.param_groups[0]["lr_mult"] == 10 else 1.0))
        opt.step()
        sched.step()
    assert seen[0] < seen[1] < seen[2] == pytest.approx(1.0)          # linear warmup to the peak
    assert all(a >= b for a, b in zip(seen[2:], seen[3:], strict=False))  # then cosine down
    assert seen[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))


# ---------------------------------------------------------------------------------------------------------------
# metrics


def test_confusion_matrix_iou_with_ignore_and_absent_classes():
    target = torch.tensor([[0, 0, 1, 255], [1, 1, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 3], [1, 1, 2, 0]])
    cm = confusion_matrix(pred, target, 4, ignore_index=255)
    assert cm.sum() == 7 and cm[0, 0] == 1 and cm[0, 1] == 1 and cm[2, 0] == 1
    m = iou_from_confusion(cm, ["a", "b", "c", "d"])
    assert m["per_class_iou"]["a"] == pytest.approx(100 / 3)     # tp 1, fn 1, fp 1
    assert m["per_class_iou"]["b"] == pytest.approx(300 / 4)
    assert m["per_class_iou"]["c"] == pytest.approx(50.0)
    assert math.isnan(m["per_class_iou"]["d"])                   # never seen nor predicted: left out
    assert m["mIoU"] == pytest.approx((100 / 3 + 75 + 50) / 3)
    assert m["aAcc"] == pytest.approx(100 * 5 / 7)


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.5], [0.0, 0.2, 0.9]])
    hits = topk_correct(logits, torch.tensor([1, 2, 0]), (1, 2, 5))
    assert hits.tolist() == [[True, True, True], [False, True, True], [False, False, True]]


# ---------------------------------------------------------------------------------------------------------------
# data validation


def test_image_folder_loads_and_checks(tmp_path: Path):
    root = make_image_folder(tmp_path / "ok", num_classes=3, train_per_class=2, val_per_class=1)
    data = load_image_folder(root)
    assert data.classes == ["class_0", "class_1", "class_2"] and len(data.train) == 6 and len(data.val) == 3
    assert data.train[0]["image"].size == (48, 40) and data.train.features["label"].names == data.classes

    with pytest.raises(InputError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "no_val" / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "no_val" / "train" / "a" / "x.png")
    with pytest.raises(InputError, match="no 'val/'"):
        load_image_folder(tmp_path / "no_val")
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir(parents=True)
    with pytest.raises(InputError, match="without images"):
        load_image_folder(tmp_path / "empty")
    extra = make_image_folder(tmp_path / "extra", num_classes=2, train_per_class=1, val_per_class=1)
    (extra / "val" / "zebra").mkdir()
    Image.new("RGB", (8, 8)).save(extra / "val" / "zebra" / "z.png")
    with pytest.raises(InputError, match=r"val classes \['zebra'\].*outside"):
        load_image_folder(extra)
    with pytest.raises(InputError, match="--num-classes 5"):
        load_image_folder(root, num_classes=5)


def test_segmentation_folder_loads_and_checks(tmp_path: Path):
    root = make_segmentation_folder(tmp_path / "seg", num_classes=3, train_images=3, val_images=2, void_id=9)
    data = load_segmentation_folder(root)
    assert data.classes == ["class_0", "class_1", "class_2"] and data.ignore_index == 9
    assert len(data.train) == 3 and set(data.label_counts["train"]) <= {0, 1, 2, 9}

    with pytest.raises(InputError, match="does not exist"):
        load_segmentation_folder(tmp_path / "missing")
    bad = make_segmentation_folder(tmp_path / "bad", num_classes=3, train_images=2, val_images=1)
    (bad / "val.txt").write_text("val/0.png\n")
    with pytest.raises(InputError, match=r"val.txt:1: expected 'image_path label_path'"):
        load_segmentation_folder(bad)
    (bad / "val.txt").write_text("val/0.png valannot/404.png\n")
    with pytest.raises(InputError, match="missing files"):
        load_segmentation_folder(bad)
    (bad / "val.txt").write_text("val/0.png valannot/0.png\n")
    label = np.zeros((48, 64), dtype=np.uint8)
    label[5, 5] = 7                                             # class id 7 with 3 classes, no void
    Image.fromarray(label).save(bad / "valannot" / "0.png")
    with pytest.raises(InputError, match=r"label ids \[7\] are outside the 3 classes"):
        load_segmentation_folder(bad)
    Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8)).save(bad / "valannot" / "0.png")
    with pytest.raises(InputError, match="single-channel"):
        load_segmentation_folder(bad)
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(bad / "valannot" / "0.png")
    with pytest.raises(InputError, match="but its label"):
        load_segmentation_folder(bad)
    (bad / "class_stats.json").unlink()
    with pytest.raises(InputError, match="pass --num-classes"):
        load_segmentation_folder(bad)


# ---------------------------------------------------------------------------------------------------------------
# reproducible sampling and augmentation


def test_sampler_order_depends_only_on_seed_and_epoch():
    a, b = ResumableSampler(10, seed=3), ResumableSampler(10, seed=3)
    assert list(a) == list(b) and sorted(list(a)) == list(range(10))
    a.set_epoch(1)
    keys = list(a)
    assert sorted(keys) == list(range(10, 20)) and [k - 10 for k in keys] != list(b)


def test_keyed_dataset_seeds_each_sample_and_leaves_global_rng_alone(tmp_path: Path):
    root = make_segmentation_folder(tmp_path / "seg", train_images=2, val_images=1)
    data = load_segmentation_folder(root)
    ds = KeyedDataset(data.train, SegTrainTransform(32, (0.5,) * 3, (0.25,) * 3, ignore_index=data.ignore_index),
                      seed=0)
    torch.manual_seed(123)
    random.seed(123)
    before = (torch.get_rng_state(), random.getstate())
    x0, y0 = ds[1]
    x0b, _ = ds[1]
    x1, _ = ds[1 + len(ds)]                                     # same sample, next epoch
    assert torch.equal(x0, x0b) and not torch.equal(x0, x1) and x0.shape == (3, 32, 32) and y0.shape == (32, 32)
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    with seeded_rng(5):
        r1 = (random.random(), np.random.rand(), torch.rand(1).item())
    with seeded_rng(5):
        r2 = (random.random(), np.random.rand(), torch.rand(1).item())
    assert r1 == r2


# ---------------------------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoints_are_atomic_and_latest_is_found(tmp_path: Path):
    from accelerate import Accelerator

    reset_accelerate()
    acc = Accelerator(cpu=True)
    model = acc.prepare(torch.nn.Linear(2, 2))
    for step in (2, 4, 6):
        save_checkpoint(acc, tmp_path, step, state={"model": "lin"}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [4, 6]
    # what a crash leaves behind is never picked: a temp dir and a dir without trainer_state.json
    (tmp_path / "checkpoints" / ".tmp-step_000000008").mkdir()
    (tmp_path / "checkpoints" / "step_000000010").mkdir()
    latest = find_latest_checkpoint(tmp_path)
    assert latest.name == "step_000000006"
    assert json.loads((latest / "trainer_state.json").read_text()) == {"model": "lin", "step": 6}
    assert resolve_resume("latest", tmp_path) == latest and resolve_resume(str(latest), tmp_path) == latest
    assert resolve_resume("latest", tmp_path / "fresh") is None
    with pytest.raises(InputError, match="no complete checkpoint"):
        resolve_resume(str(tmp_path / "fresh"), tmp_path)
    save_checkpoint(acc, tmp_path, 12, keep=0)                  # a new save clears stale temp dirs
    assert not (tmp_path / "checkpoints" / ".tmp-step_000000008").exists()
    assert model.weight.shape == (2, 2)
    reset_accelerate()


# ---------------------------------------------------------------------------------------------------------------
# models


def test_unknown_model_is_a_clear_error():
    with pytest.raises(InputError, match=r"unknown model 'resnet18_fdcnv'.*did you mean: resnet18_fdconv"):
        check_model_name("resnet18_fdcnv")
    assert vanilla_twin("resnet18_fdconv") == "resnet18" and vanilla_twin("resnet18") == "resnet18"


def test_init_from_vanilla_checkpoint_is_function_preserving(tmp_path: Path):
    import timm
    from safetensors.torch import save_file

    from fdconv_zoo.tools.testing import randomize_norms_

    torch.manual_seed(0)
    vanilla = randomize_norms_(timm.create_model("resnet18", num_classes=3)).eval()
    save_file(vanilla.state_dict(), str(tmp_path / "r18.safetensors"))
    fd = create_model("resnet18_fdconv", num_classes=3, init_from=str(tmp_path / "r18.safetensors"), **FD_SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref, out = vanilla(x), fd(x)
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-4
    with pytest.raises(InputError, match="no such file"):
        create_model("resnet18_fdconv", num_classes=3, init_from="./missing.safetensors")


def test_export_round_trips_through_local_dir(tmp_path: Path):
    import timm

    model = create_model("resnet18_fdconv", num_classes=3, **FD_SMALL).eval()
    folder = export_model(model, tmp_path / "export")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet18_fdconv" and config["num_classes"] == 3
    assert config["model_args"]["fd_kernel_num"] == 4
    back = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(back(x), model(x), atol=1e-5)


@pytest.mark.parametrize("backbone,kwargs", [
    ("resnet18_fdconv", FD_SMALL),
    ("swin_tiny_patch4_window7_224", dict(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=2)),
])
def test_segmentation_model_shapes(backbone: str, kwargs: dict):
    model = create_segmentation_model(backbone, 5, channels=16, crop_size=64, **kwargs)
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 5, 64, 64)
    model.eval()
    with torch.no_grad():
        whole = whole_image_logits(model, torch.randn(1, 3, 50, 70), model.output_stride)
        slide = sliding_window_logits(model, torch.randn(1, 3, 50, 70), 5, crop=64)
    assert whole.shape == slide.shape == (1, 5, 50, 70)
    if backbone.startswith("swin"):
        assert model.nhwc                                  # Swin's list features are NHWC, permuted by the model


# ---------------------------------------------------------------------------------------------------------------
# the scripts, in this process: a fixed batch must be learned


@pytest.mark.parametrize("script", ["train_classification", "finetune_segmentation"])
def test_loss_decreases_on_a_fixed_batch(tmp_path: Path, script: str):
    if script == "train_classification":
        data = make_image_folder(tmp_path / "data", num_classes=3, train_per_class=4, val_per_class=1)
        extra = ["--image-size", "32", "--lr", "3e-3"]
    else:
        data = make_segmentation_folder(tmp_path / "data", num_classes=3, train_images=4, val_images=1)
        extra = ["--crop-size", "32", "--head-channels", "16", "--lr", "3e-3"]
    out = tmp_path / "out"
    reset_accelerate()
    rc = load_script(script).main([
        "--model", "resnet18_fdconv", "--model-kwargs", "fd_kernel_num=4", "--data-dir", str(data),
        "--batch-size", "4", "--max-steps", "8", "--warmup-steps", "0", "--overfit-batch", "--checkpoint-every", "0",
        "--log-every", "1", "--num-workers", "0", "--report-to", "none", "--output-dir", str(out), "--seed", "0",
        *extra])
    reset_accelerate()
    assert rc == 0
    losses = [r["loss"] for r in read_log(out) if "loss" in r]
    assert len(losses) == 8
    assert losses[-1] < 0.7 * losses[0], losses
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "config.json").is_file()


def test_example_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = sorted((Path(__file__).resolve().parents[1] / "scripts" / "configs").glob("*.yaml"))
    assert {c.stem for c in configs} >= {"cpu_2proc", "gpu_1_bf16", "multi_gpu", "multi_node"}
    for path in configs:
        cfg = load_config_from_file(str(path))
        assert cfg.num_processes >= 1 and cfg.compute_environment.value == "LOCAL_MACHINE"


def test_export_with_a_tag_writes_a_model_card(tmp_path: Path):
    model = create_model("resnet18", num_classes=3)
    card = dict(tag="toy_cls3", datasets=["toy"], metrics={"toy": {"top1": 50.0, "top5": 100.0}},
                trained_with={"script": "scripts/train_classification.py", "args": ["--model", "resnet18"]})
    folder = export_model(model, tmp_path / "export", card=card)
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json"}
    try:
        import fdconv_zoo.hub  # noqa: F401
    except ImportError:
        return
    assert (folder / "README.md").is_file() and "toy_cls3" in (folder / "README.md").read_text()


def test_init_from_a_hub_tag_of_the_vanilla_twin_offline(fake_hub: Path):
    """``--init-from resnet18.a1_in1k`` on a features_only FDConv backbone: vanilla weights, same feature maps."""
    import timm

    from fdconv_zoo.tools.testing import randomize_norms_, save_timm_model_to_fake_hub

    torch.manual_seed(0)
    vanilla = randomize_norms_(timm.create_model("resnet18")).eval()
    save_timm_model_to_fake_hub(vanilla, fake_hub, "timm/resnet18.a1_in1k")
    seg = create_segmentation_model("resnet18_fdconv", 5, channels=16, init_from="resnet18.a1_in1k", **FD_SMALL).eval()
    ref = timm.create_model("resnet18", features_only=True, out_indices=(-4, -3, -2, -1))
    ref.load_state_dict({k: v for k, v in vanilla.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for got, want in zip(seg.backbone(x), ref.eval()(x), strict=True):
            assert ((got - want).abs().max() / want.abs().max()).item() < 1e-4
