"""``tokens_times_kernel``: the same values and gradients as torch's bmm/baddbmm, a contiguous kernel gradient."""

import pytest
import torch

from fdconv_zoo.layers.per_sample_gemm import tokens_times_kernel


def _reference(tokens, kernel, bias):
    kernel_t = kernel.expand(tokens.shape[0], -1, -1).transpose(1, 2)
    return torch.bmm(tokens, kernel_t) if bias is None else torch.baddbmm(bias, tokens, kernel_t)


@pytest.mark.parametrize("kernel_batch", [3, 1])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_bmm_values_and_gradients(kernel_batch, with_bias):
    torch.manual_seed(0)
    tokens = torch.randn(3, 5, 4, requires_grad=True)
    kernel = torch.randn(kernel_batch, 6, 4, requires_grad=True)
    bias = torch.randn(6, requires_grad=True) if with_bias else None
    leaves = [t for t in (tokens, kernel, bias) if t is not None]
    ours = tokens_times_kernel(tokens, kernel, bias)
    grads = torch.autograd.grad(ours.square().sum(), leaves)
    ref = _reference(tokens, kernel, bias)
    ref_grads = torch.autograd.grad(ref.square().sum(), leaves)
    assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_batch", [2, 1])
def test_gradcheck_float64(kernel_batch):
    torch.manual_seed(0)
    tokens = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(kernel_batch, 5, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tokens_times_kernel, (tokens, kernel, bias))
    assert torch.autograd.gradcheck(lambda t, k: tokens_times_kernel(t, k), (tokens, kernel))


def test_kernel_gradient_is_contiguous_in_the_kernel_layout():
    """autograd's bmm(tokens, K^T) hands the kernel a transposed gradient (strides (O*I, 1, O))."""
    tokens = torch.randn(2, 7, 4)
    kernel = torch.randn(2, 6, 4, requires_grad=True)
    seen = []
    product = kernel * 1.0                       # a non-leaf: its hook sees the gradient as produced
    product.register_hook(lambda g: seen.append(g.is_contiguous()))
    tokens_times_kernel(tokens, product).sum().backward()
    assert seen == [True]


def test_autocast_runs_the_gemm_in_the_autocast_dtype():
    torch.manual_seed(0)
    tokens = torch.randn(2, 5, 8, requires_grad=True)
    kernel = torch.randn(2, 3, 8, requires_grad=True)
    bias = torch.randn(3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = tokens_times_kernel(tokens, kernel, bias)
        ref = _reference(tokens, kernel, bias)
    assert ours.dtype == ref.dtype == torch.bfloat16
    assert torch.equal(ours, ref)
    ours.float().sum().backward()
    assert tokens.grad.dtype == kernel.grad.dtype == bias.grad.dtype == torch.float32
