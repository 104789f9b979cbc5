"""Real downstream consumers of the FDConv backbones: smp segmentation models and torchvision Faster R-CNN."""

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
