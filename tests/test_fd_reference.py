"""The fast path equals the reference formulation (``layers/fd_reference.py``): forward and every gradient."""

import copy

import pytest
import torch
from test_layers import CONV_CASES, CONV_IDS, perturb_
from timm.layers import set_layer_config

from fdconv_zoo import FDConv2d, FDLinear
from fdconv_zoo.layers import fd_base
from fdconv_zoo.layers.fd_reference import set_fd_reference, use_reference
from fdconv_zoo.tools.testing import max_relative_error


def _both(layer):
    fast, reference = copy.deepcopy(layer), copy.deepcopy(layer)
    fast.reference, reference.reference = False, True
    return fast, reference


def _outputs_and_grads(layer, x):
    x = x.clone().requires_grad_()
    y = layer(x)
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).square().sum().backward()
    return y, x.grad, {n: p.grad for n, p in layer.named_parameters()}


def _assert_equal_paths(layer, x, forward_tol=1e-5, grad_tol=1e-4):
    fast, reference = _both(layer)
    y_fast, dx_fast, grads_fast = _outputs_and_grads(fast, x)
    y_ref, dx_ref, grads_ref = _outputs_and_grads(reference, x)
    assert y_fast.dtype == y_ref.dtype and y_fast.shape == y_ref.shape
    assert max_relative_error(y_fast, y_ref) <= forward_tol
    assert max_relative_error(dx_fast, dx_ref) <= grad_tol
    for name, grad in grads_ref.items():
        assert grads_fast[name] is not None and grad is not None, name
        assert max_relative_error(grads_fast[name], grad) <= grad_tol, name


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_fdconv2d_fast_path_equals_the_reference(case, train):
    cin, cout, k, stride, padding, dilation, bias, n, height, width = case
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, k, stride, padding, dilation, bias=bias)
    layer = perturb_(FDConv2d.from_conv(conv, kernel_num=n)).train(train)
    x = torch.randn(3, cin, height, width)
    _assert_equal_paths(layer, x)
    with torch.no_grad():   # the perturbed modulations really act: the output has left the plain conv's
        assert max_relative_error(layer(x), conv(x)) > 1e-2


@pytest.mark.parametrize("per_sample", [False, True], ids=["batched", "per-sample"])
@pytest.mark.parametrize("lowfreq_att", [False, True], ids=["", "lowfreq"])
def test_fdconv2d_paths_agree_per_sample_and_with_lowfreq_att(lowfreq_att, per_sample, monkeypatch):
    if per_sample:
        monkeypatch.setattr(fd_base, "PER_SAMPLE_SPECTRUM_BYTES", 0)
    torch.manual_seed(0)
    layer = perturb_(FDConv2d(24, 32, 3, padding=1, kernel_num=8, fbm_lowfreq_att=lowfreq_att)).train()
    _assert_equal_paths(layer, torch.randn(3, 24, 10, 9))


@pytest.mark.parametrize("shape", [(3, 7, 40), (2, 4, 5, 40), (1, 3, 40)])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_fdlinear_fast_path_equals_the_reference(shape, train):
    torch.manual_seed(0)
    layer = perturb_(FDLinear(40, 56, kernel_num=16)).train(train)
    _assert_equal_paths(layer, torch.randn(shape))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("make,shape", [(lambda: FDConv2d(24, 32, 3, padding=1, kernel_num=8), (2, 24, 8, 8)),
                                        (lambda: FDLinear(24, 40, kernel_num=8), (2, 5, 24))], ids=["conv", "linear"])
def test_paths_agree_under_autocast(make, shape, dtype):
    torch.manual_seed(0)
    layer = perturb_(make()).train()
    x = torch.randn(shape)
    fast, reference = _both(layer)
    with torch.autocast("cpu", dtype=dtype):
        y_fast, y_ref = fast(x), reference(x)
    assert y_fast.dtype == y_ref.dtype == dtype
    assert max_relative_error(y_fast.float(), y_ref.float()) <= 3e-2


def test_the_global_switch_and_the_layer_option():
    layer = FDConv2d(24, 32, 1, kernel_num=8)
    assert layer.reference is None and not use_reference(layer.reference)
    set_fd_reference(True)
    try:
        assert use_reference(None) and not use_reference(False)
    finally:
        set_fd_reference(False)
    assert use_reference(True)
    with set_layer_config(scriptable=True):
        assert use_reference(False)          # scriptable mode always takes the reference
