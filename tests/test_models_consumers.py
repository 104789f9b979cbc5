"""Real downstream consumers of the FDConv backbones: smp, torchvision Faster R-CNN, transformers DETR, Mask2Former."""

from __future__ import annotations

import pytest
import timm
import torch

import fdconv_zoo  # noqa: F401  (registers the models: smp's "tu-" encoders go through timm.create_model)
from fdconv_zoo.layers import FDConv2d
from fdconv_zoo.tools.testing import randomize_norms_

smp = pytest.importorskip("segmentation_models_pytorch")
torchvision = pytest.importorskip("torchvision")


@pytest.mark.parametrize("decoder", ["Unet", "FPN"])
def test_smp_with_tu_resnet50_fdconv(decoder: str) -> None:
    model = getattr(smp, decoder)("tu-resnet50_fdconv", encoder_weights=None, classes=3)
    randomize_norms_(model.encoder)  # timm zero-inits each block's last BN, which would zero every FD gradient
    fd = [m for m in model.encoder.modules() if isinstance(m, FDConv2d)]
    assert len(fd) == 48  # every block conv of ResNet-50
    model.train()
    x = torch.randn(1, 3, 64, 64)  # batch 1 in training: FDConv's KSM handles it, the 2x2 bottom keeps BN happy
    y = model(x)
    assert y.shape == (1, 3, 64, 64)
    y.square().mean().backward()
    assert fd[-1].dft_weight.grad is not None and fd[-1].dft_weight.grad.abs().sum() > 0
    assert fd[0].KSM_Global.kernel_fc.weight.grad is not None


def test_faster_rcnn_training_step_on_features_only_backbone() -> None:
    """timm features_only FDConv ResNet -> torchvision BackboneWithFPN -> FasterRCNN, one SGD step."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    torch.manual_seed(0)
    body = randomize_norms_(timm.create_model("resnet18_fdconv", features_only=True, out_indices=(1, 2, 3, 4)))
    # FeatureListNet's children run in order (stem, layer1..4), which is what BackboneWithFPN expects.
    names = body.feature_info.module_name()
    backbone = BackboneWithFPN(body, return_layers={n: str(i) for i, n in enumerate(names)},
                               in_channels_list=body.feature_info.channels(), out_channels=32)
    model = FasterRCNN(backbone, num_classes=3, min_size=64, max_size=96, rpn_batch_size_per_image=32,
                       box_batch_size_per_image=16, rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50)
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    targets = [
        dict(boxes=torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 70.0, 60.0]]), labels=torch.tensor([1, 2])),
        dict(boxes=torch.tensor([[10.0, 12.0, 50.0, 60.0]]), labels=torch.tensor([1])),
    ]
    fd_layer = body.layer4[1].conv2
    before = fd_layer.dft_weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert not torch.equal(fd_layer.dft_weight, before)

    model.eval()
    with torch.no_grad():
        detections = model([torch.rand(3, 64, 64)])
    assert set(detections[0]) == {"boxes", "labels", "scores"}


def _tiny_transformer_args() -> dict:
    return dict(num_queries=10, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, d_model=64)


def test_transformers_detr_over_an_fdconv_backbone_trains_infers_and_loads_our_weights(tmp_path) -> None:
    """DETR swaps every BatchNorm2d for its frozen one, KSM's too: training, eval and a batch of one run, and the
    backbone takes the weights of our export."""
    transformers = pytest.importorskip("transformers")
    from fdconv_zoo.hub import save_for_hub

    torch.manual_seed(0)
    detr = transformers.DetrForObjectDetection(transformers.DetrConfig(
        use_timm_backbone=True, backbone="resnet18_fdconv", use_pretrained_backbone=False, num_labels=3,
        **_tiny_transformer_args()))
    body = detr.model.backbone.model
    assert type(body.layer1[0].conv1.KSM_Global.bn).__name__ == "DetrFrozenBatchNorm2d"
    source = randomize_norms_(timm.create_model("resnet18_fdconv.a1_in1k"))
    save_for_hub(source, tmp_path / "export")
    ours = timm.create_model(f"local-dir:{tmp_path / 'export'}", pretrained=True, features_only=True,
                             out_indices=(1, 2, 3, 4)).eval()
    missing, unexpected = body.load_state_dict(ours.state_dict(), strict=False)
    assert not missing and all(k.endswith("num_batches_tracked") for k in unexpected)   # frozen BN keeps none

    x = torch.randn(2, 3, 96, 96)
    labels = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]])} for _ in range(2)]
    out = detr.train()(pixel_values=x, labels=labels)
    out.loss.backward()
    assert body.layer4[1].conv2.dft_weight.grad.abs().sum() > 0
    detr.eval()
    with torch.no_grad():
        for theirs, mine in zip(body(x[:1]), ours(x[:1]), strict=True):
            assert torch.allclose(theirs, mine, rtol=1e-4, atol=1e-5)
        assert detr(pixel_values=x[:1]).logits.shape == (1, 10, 4)


def test_transformers_mask2former_over_an_fdconv_backbone_trains_and_loads_our_weights(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    from fdconv_zoo.hub import save_for_hub

    torch.manual_seed(0)
    backbone = transformers.TimmBackboneConfig(backbone="resnet18_fdconv", out_indices=(1, 2, 3, 4),
                                               use_pretrained_backbone=False)
    config = transformers.Mask2FormerConfig(backbone_config=backbone, num_labels=3, num_queries=10, hidden_dim=64,
                                            mask_feature_size=64, feature_size=64, encoder_layers=1,
                                            decoder_layers=2, encoder_feedforward_dim=64, dim_feedforward=64,
                                            num_attention_heads=2)
    model = transformers.Mask2FormerForUniversalSegmentation(config).train()
    assert any(isinstance(m, FDConv2d) for m in model.modules())
    save_for_hub(randomize_norms_(timm.create_model("resnet18_fdconv.a1_in1k")), tmp_path / "export")
    ours = timm.create_model(f"local-dir:{tmp_path / 'export'}", pretrained=True, features_only=True,
                             out_indices=(1, 2, 3, 4))
    body = model.model.pixel_level_module.encoder._backbone
    body.load_state_dict(ours.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(body.state_dict().values(), ours.state_dict().values(), strict=True))
    out = model(pixel_values=torch.randn(2, 3, 96, 96), mask_labels=[torch.zeros(1, 96, 96)] * 2,
                class_labels=[torch.tensor([1])] * 2)
    out.loss.backward()
    assert torch.isfinite(out.loss)
