"""``tokens_times_kernel``: the values and gradients of plain autograd ops, a contiguous kernel gradient, and no
scaled copy of the kernel or the tokens kept for backward."""

import pytest
import torch

from fdconv_zoo.layers._ops.per_sample_gemm import OUTPUT_KEPT_ABOVE, tokens_times_kernel


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


def _factored_reference(tokens, kernel, bias, in_scale, out_scale, channels_first):
    y = torch.bmm(tokens * in_scale[:, None, :], kernel.expand(tokens.shape[0], -1, -1).transpose(1, 2))
    y = y * out_scale[:, None, :]
    y = y if bias is None else y + bias
    return y.transpose(1, 2) if channels_first else y


# tokens T against O and I: each factor goes on the kernel when the kernel is the smaller operand; an output
# factor on the output has its gradient from the kept output only when the kernel is much larger (I > 2 T)
PLACEMENTS = {"both_on_kernel": (9, 4, 3), "both_on_tokens": (2, 4, 3), "in_on_kernel": (4, 5, 3),
              "out_on_kernel": (4, 3, 5), "output_kept": (2, 5, 3), "in_on_kernel_output_kept": (4, 9, 3)}
# (T, I, O)


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("channels_first", [False, True], ids=["tokens_out", "channels_first"])
@pytest.mark.parametrize("kernel_batch", [2, 1])
def test_factors_match_autograd_on_every_placement(placement, channels_first, kernel_batch):
    torch.manual_seed(0)
    count, cin, cout = PLACEMENTS[placement]
    shapes = [(2, count, cin), (kernel_batch, cout, cin), (cout,), (2, cin), (2, cout)]
    leaves = [torch.randn(shape, dtype=torch.float64, requires_grad=True) for shape in shapes]
    ours = tokens_times_kernel(*leaves, channels_first=channels_first)
    ref = _factored_reference(*leaves, channels_first)
    assert ours.shape == ref.shape and ours.is_contiguous()
    assert torch.allclose(ours, ref)
    weights = torch.randn_like(ref)
    got = torch.autograd.grad((ours * weights).sum(), leaves)
    want = torch.autograd.grad((ref * weights).sum(), leaves)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and torch.allclose(g, w)
    assert torch.autograd.gradcheck(lambda *t: tokens_times_kernel(*t, channels_first=channels_first), leaves)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_backward_keeps_no_scaled_copy(placement):
    """Only the unscaled tokens and kernel (shared with their producers), the factors and, with the output
    factor on the output of a much larger kernel, the GEMM's output are saved: never ``kernel * factor`` or
    ``tokens * factor``."""
    count, cin, cout = PLACEMENTS[placement]
    tokens = torch.randn(2, count, cin, requires_grad=True)
    kernel = torch.randn(2, cout, cin, requires_grad=True)
    factors = (torch.rand(2, cin, requires_grad=True), torch.rand(2, cout, requires_grad=True))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = tokens_times_kernel(tokens, kernel, None, *factors)
    inputs = {t.untyped_storage().data_ptr() for t in (tokens, kernel, *factors)}
    extra = [tuple(t.shape) for t in saved if t.untyped_storage().data_ptr() not in inputs]
    output_kept = cin > OUTPUT_KEPT_ABOVE * count
    assert extra == ([tuple(y.shape)] if output_kept else []), extra


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_half_precision_kernel_with_float32_factors_under_autocast(placement):
    """The factors' gradients contract the kernel gradient with a bf16 kernel and float32 factors: in float32."""
    torch.manual_seed(0)
    count, cin, cout = PLACEMENTS[placement]
    tokens = torch.randn(2, count, cin, requires_grad=True)
    kernel = torch.randn(2, cout, cin).bfloat16().requires_grad_()
    factors = [torch.rand(2, cin, requires_grad=True), torch.rand(2, cout, requires_grad=True)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = tokens_times_kernel(tokens, kernel, None, *factors)
    ours.float().square().sum().backward()
    got = [f.grad for f in factors]
    for f in factors:
        f.grad = None
    ref = _factored_reference(tokens.detach(), kernel.detach().float(), None, *factors, False)
    ref.square().sum().backward()
    for g, f in zip(got, factors, strict=True):
        assert g.dtype == torch.float32
        assert torch.allclose(g, f.grad, rtol=0.05, atol=0.05 * f.grad.abs().max().item())
