"""FDConv layers: function preservation, gradients, edge shapes and inputs."""

import copy

import pytest
import torch
from spec_fdconv import spec_linear_forward
from torch import nn

from fdconv_zoo import FDConv2d, FDLinear
from fdconv_zoo.tools.testing import max_relative_error

torch.manual_seed(0)


def perturb_(layer: nn.Module, scale: float = 0.3, seed: int = 1) -> nn.Module:
    """Move every FDConv parameter away from its neutral init, so every factor is non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "dft_weight" not in name and name != "bias":
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
        for m in layer.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
    return layer


# (in, out, k, stride, padding, dilation, bias, kernel_num, H, W): I*k odd, n not dividing the bins, n = 1,
# stride 2, dilation, no bias, non-square maps, 'same' padding, 1x1 strided, wide (unfold path) and narrow layers.
CONV_CASES = [
    (32, 48, 3, 1, 1, 1, True, 64, 9, 11),
    (33, 20, 3, 2, 1, 1, True, 7, 7, 5),
    (65, 40, 1, 1, 0, 1, False, 64, 6, 6),
    (24, 24, 3, 1, 2, 2, True, 1, 8, 6),
    (20, 96, 3, 1, "same", 1, False, 5, 4, 4),
    (64, 32, 1, 2, 0, 1, True, 16, 9, 7),
    (17, 18, 3, 2, 0, 1, True, 3, 10, 10),
    # large maps: the rank-1 factors (and bias) are folded into the kernel, on either side or both
    (8, 24, 3, 1, 1, 1, True, 8, 20, 18),
    (16, 24, 1, 1, 0, 1, True, 8, 12, 10),
    (64, 17, 3, 2, 1, 1, True, 8, 16, 16),
]
CONV_IDS = [f"I{c[0]}-O{c[1]}-k{c[2]}-s{c[3]}-p{c[4]}-d{c[5]}-n{c[7]}" for c in CONV_CASES]


def make_conv(case):
    cin, cout, k, stride, padding, dilation, bias, _, _, _ = case
    return nn.Conv2d(cin, cout, k, stride, padding, dilation, bias=bias)


@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_from_conv_is_function_preserving(case, train):
    conv = make_conv(case)
    fd = FDConv2d.from_conv(conv, kernel_num=case[7]).train(train)
    x = torch.randn(3, case[0], case[8], case[9])
    assert max_relative_error(fd(x), conv(x)) <= 1e-5


def test_inference_path_equals_autograd_path():
    fd = perturb_(FDConv2d(40, 72, 3, padding=1, kernel_num=12)).eval()
    x = torch.randn(2, 40, 6, 5)
    with torch.no_grad():
        fast = fd(x)
    assert torch.allclose(fd(x), fast, rtol=1e-5, atol=1e-6)


def test_batch_of_one_trains():
    fd = perturb_(FDConv2d(32, 32, 3, padding=1, kernel_num=8)).train()
    x = torch.randn(1, 32, 6, 6, requires_grad=True)
    fd(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in fd.parameters() if p.requires_grad)


def test_channels_last_input_keeps_format_and_values():
    fd = perturb_(FDConv2d(32, 48, 3, padding=1, kernel_num=8)).eval()
    x = torch.randn(2, 32, 7, 9)
    y = fd(x)
    y_cl = fd(x.contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    assert max_relative_error(y_cl, y) <= 1e-5
    fd1 = perturb_(FDConv2d(32, 64, 1, kernel_num=8)).eval()
    y1 = fd1(x.contiguous(memory_format=torch.channels_last))
    assert y1.is_contiguous(memory_format=torch.channels_last)
    assert max_relative_error(y1, fd1(x)) <= 1e-5


@pytest.mark.parametrize("shape", [(2, 7, 40), (2, 3, 5, 40), (3, 40), (2, 50, 40), (2, 10, 12, 40)])
def test_fdlinear_function_preserving_and_reference(shape):
    lin = nn.Linear(40, 90)
    fd = FDLinear.from_linear(lin, kernel_num=16)
    x = torch.randn(*shape)
    assert max_relative_error(fd(x), lin(x)) <= 1e-5
    perturb_(fd).eval()
    assert max_relative_error(fd(x).double(), spec_linear_forward(fd, x)) <= 1e-5


def test_gradcheck_float64():
    fd = perturb_(FDConv2d(5, 6, 3, stride=1, padding=1, kernel_num=4, dtype=torch.float64)).eval()
    fd.bias.data.normal_()
    x = torch.randn(2, 5, 5, 4, dtype=torch.float64, requires_grad=True)
    names = ["dft_weight", "KSM_Local.conv.weight", "KSM_Global.kernel_fc.weight", "KSM_Global.spatial_fc.bias",
             "FBM.freq_weight_conv_list.1.weight", "KSM_Global.fc.weight"]
    params = {n: p.detach().clone().requires_grad_(True) for n, p in fd.named_parameters() if n in names}
    assert len(params) == len(names)

    def fn(x, *tensors):
        return torch.func.functional_call(fd, dict(zip(params, tensors, strict=True)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params.values()), eps=1e-6, atol=1e-5, rtol=1e-4)


# late-layer shapes (more outputs than positions): im2col + batched GEMM, input taps scaled or the
# filter and bias folded into the kernel (k=1 with padding), 1x1 and strided 1x1, channels_last
@pytest.mark.parametrize("cin,cout,k,stride,pad,size,channels_last", [
    (4, 24, 3, 1, 1, (3, 3), False), (5, 30, 3, 2, 1, (5, 4), True), (2, 24, 1, 1, 1, (1, 2), False),
    (8, 40, 1, 1, 0, (2, 2), True), (8, 40, 1, 2, 0, (3, 3), False)])
def test_gradcheck_float64_unfold_path(cin, cout, k, stride, pad, size, channels_last):
    fd = perturb_(FDConv2d(cin, cout, k, stride=stride, padding=pad, kernel_num=4, dtype=torch.float64)).eval()
    fd.bias.data.normal_()
    x = torch.randn(2, cin, *size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    names = ["dft_weight", "bias", "KSM_Global.channel_fc.bias", "KSM_Global.filter_fc.bias"]
    names += ["KSM_Global.spatial_fc.bias"] if k > 1 else []
    params = {n: p.detach().clone().requires_grad_(True) for n, p in fd.named_parameters() if n in names}
    assert len(params) == len(names)

    def fn(x, *tensors):
        return torch.func.functional_call(fd, dict(zip(params, tensors, strict=True)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params.values()), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_gradcheck_float64_local_gate_only(k):
    """Frozen spectrum and gains, input without grad: backward runs for the KSM local weight alone."""
    fd = perturb_(FDConv2d(5, 6, k, padding=k // 2, kernel_num=4, dtype=torch.float64)).eval().requires_grad_(False)
    x = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    local = fd.KSM_Local.conv.weight.detach().clone().requires_grad_(True)

    def fn(local):
        return torch.func.functional_call(fd, {"KSM_Local.conv.weight": local}, (x,))

    assert torch.autograd.gradcheck(fn, (local,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_float64_fdlinear_train_mode():
    fd = perturb_(FDLinear(6, 5, kernel_num=3, dtype=torch.float64)).train()
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    dft = fd.dft_weight.detach().clone().requires_grad_(True)

    def fn(x, dft):
        return torch.func.functional_call(fd, {"dft_weight": dft}, (x,))

    assert torch.autograd.gradcheck(fn, (x, dft), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_whole_bfloat16_layer_runs():
    fd = perturb_(FDConv2d(32, 32, 3, padding=1, kernel_num=8)).eval()
    x = torch.randn(2, 32, 8, 8)
    out = copy.deepcopy(fd).to(torch.bfloat16)(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert max_relative_error(out.float(), fd(x)) <= 3e-2


def test_device_and_dtype_kwargs():
    fd = FDConv2d(32, 32, 3, dtype=torch.float64, device="cpu")
    assert all(p.dtype == torch.float64 for p in fd.parameters())
    assert fd(torch.randn(1, 32, 5, 5, dtype=torch.float64)).dtype == torch.float64


def test_training_after_inference_mode():
    fd = FDConv2d(32, 32, 3, padding=1, kernel_num=8)
    x = torch.randn(2, 32, 11, 13)
    with torch.inference_mode():
        fd(x)                                   # fills the FBM mask cache
    fd(x).sum().backward()
    assert fd.dft_weight.grad is not None


@pytest.mark.parametrize("make,plain,shape", [
    (lambda: FDConv2d(32, 48, 3, stride=2, padding=1, kernel_num=8), lambda: nn.Conv2d(32, 48, 3, 2, 1), (0, 32, 9, 9)),
    (lambda: FDConv2d(32, 48, 1, kernel_num=8), lambda: nn.Conv2d(32, 48, 1), (0, 32, 5, 5)),
    (lambda: FDLinear(32, 48, kernel_num=8), lambda: nn.Linear(32, 48), (0, 7, 32)),
    (lambda: FDLinear(32, 48, kernel_num=8), lambda: nn.Linear(32, 48), (0, 32)),
])
@pytest.mark.parametrize("train", [True, False])
def test_empty_batch_gives_an_empty_differentiable_output_like_torch(make, plain, shape, train):
    layer = make().train(train)
    x = torch.randn(shape, requires_grad=True)
    y = layer(x)
    assert y.shape == plain()(x).shape
    y.sum().backward()
    assert x.grad.shape == x.shape and layer.dft_weight.grad is not None
