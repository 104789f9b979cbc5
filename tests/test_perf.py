"""Cost-related guarantees that hold without timing anything: what backward keeps alive,
torch.compile without graph breaks, AMP with float32 FFTs, exact separable FBM, block checkpointing."""

import copy
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
import torch._dynamo as dynamo
from test_layers import perturb_

import fdconv_zoo  # noqa: F401  (registers the *_fdconv models)
from fdconv_zoo import FDConv2d, FDLinear
from fdconv_zoo.layers._ops.band_modulation import low_pass_list
from fdconv_zoo.layers.fbm import FrequencyBandModulation, low_pass_masks
from fdconv_zoo.tools.benchmark import live_bytes_after as _live_bytes_after
from fdconv_zoo.tools.testing import max_relative_error


def _largest_operand(fn, *ops: str) -> int:
    """Elements of the largest first operand of any of ``ops`` (e.g. a copy's destination) while ``fn`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    sizes = [e.input_shapes[0] for e in prof.events() if e.name in ops and e.input_shapes]
    return max((torch.Size(s).numel() for s in sizes if s), default=0)


@pytest.mark.parametrize("make,shape", [(lambda: FDConv2d(32, 64, 1), (1, 32, 4, 4)),
                                        (lambda: FDConv2d(32, 64, 3, padding=1), (2, 32, 4, 4)),
                                        (lambda: FDLinear(32, 64), (1, 4, 32))])
@pytest.mark.parametrize("train", [False, True])
def test_kernel_build_copies_nothing_kernel_sized(make, shape, train):
    """Copies of spectrum-sized tensors are the FFT's transposes; a copy as large as the per-sample kernels
    is waste (torch.matmul made one of the KSM local logits whenever its weight required grad)."""
    layer = perturb_(make()).train(train)
    x = torch.randn(shape, requires_grad=train)
    kernel_entries = shape[0] * layer.out_channels * layer.in_channels * layer._k ** 2
    if train:
        largest = _largest_operand(lambda: layer(x).square().sum().backward(), "aten::copy_")
    else:
        with torch.inference_mode():
            largest = _largest_operand(lambda: layer(x), "aten::copy_")
    assert largest < kernel_entries


@pytest.mark.parametrize("make,shape", [(lambda: FDConv2d(16, 24, 3, padding=1), (4, 16, 8, 8)),
                                        (lambda: FDConv2d(16, 24, 1), (4, 16, 8, 8)),
                                        (lambda: FDLinear(16, 24), (4, 64, 16))])
@pytest.mark.parametrize("per_sample", [False, True])
def test_input_gradient_needs_no_input_sized_fill_or_division(make, shape, per_sample, monkeypatch):
    """KSM's pooled mean and the batch chunks join the input gradient without input-sized temporaries:
    autograd's mean backward divides an expanded gradient into a new tensor, and slicing a chunk out
    of the batch zero-fills a whole input-sized gradient per chunk in backward."""
    if per_sample:
        import fdconv_zoo.layers.fd_base as fd_base

        monkeypatch.setattr(fd_base, "PER_SAMPLE_SPECTRUM_BYTES", 0)
    layer = perturb_(make()).train()
    x = torch.randn(shape, requires_grad=True)
    y = layer(x).square().sum()
    largest = _largest_operand(lambda: y.backward(), "aten::fill_", "aten::zero_", "aten::div")
    assert largest < x.numel()


@pytest.mark.parametrize("amp", [None, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("k,size", [(3, 4), (1, 4), (3, 12)], ids=["unfold", "1x1", "grouped"])
def test_backward_keeps_at_most_one_per_sample_kernel(k, size, amp):
    """One per-sample kernel in the GEMM's dtype plus a few activation-sized tensors (output included).

    Autograd through the plain ops kept gain map, FDW kernel, local gate, product and FBM bands (~4.5
    kernels here), and two copies of the k*k-times-larger unfolded input (21 maps instead of 4.4).
    Under autocast the float32 kernel and the GEMM's half-precision cast of it were both kept (3 bf16
    kernels' worth). The grouped convolution (maps at least as large as the channel count: ResNet's
    layer1 and layer2) keeps its own copy of the kernel with the spatial factor multiplied in, and the
    FBM output: one kernel and one activation more there.
    """
    cin, cout = 96, 128
    fd = perturb_(FDConv2d(cin, cout, k, padding=k // 2, kernel_num=16)).train()

    def forward(batch: int):
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            return fd(torch.randn(batch, cin, size, size, requires_grad=True))

    small, large = 2, 6
    live = [_live_bytes_after(lambda b=b: forward(b)) for b in (small, large)]
    per_sample = (live[1] - live[0]) / (large - small)
    kernel_bytes = cout * cin * k * k * (4 if amp is None else 2)
    activation_bytes = cin * size * size * 4
    kernels, activations = (2, 7) if size == 12 else (1, 6)
    assert per_sample <= kernels * kernel_bytes + activations * activation_bytes, (per_sample, kernel_bytes,
                                                                                  activation_bytes)


def _no_graph_breaks(module, *inputs) -> None:
    dynamo.reset()
    explanation = dynamo.explain(module)(*inputs)
    assert explanation.graph_break_count == 0, [r.reason for r in explanation.break_reasons]


@pytest.mark.parametrize("make,shape", [(lambda: FDConv2d(32, 48, 3, padding=1, kernel_num=8), (2, 32, 3, 3)),
                                        (lambda: FDLinear(32, 40, kernel_num=8), (2, 5, 32))])
def test_autocast_forward_has_no_graph_breaks(make, shape):
    """Under autocast the kernel is written in the GEMM's dtype (an ``out=`` product): still one graph."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _no_graph_breaks(perturb_(make()).train(), torch.randn(shape))


@pytest.mark.slow
@pytest.mark.parametrize("per_sample", [False, True], ids=["batched", "per-sample"])
@pytest.mark.parametrize("size", [8, 3], ids=["conv", "unfold"])
def test_compiled_matches_eager_forward_and_backward(size, per_sample, monkeypatch):
    """Per-sample chunks (how large layers run on the CPU) take other paths in the kernel builder's backward."""
    if per_sample:
        import fdconv_zoo.layers.fd_base as fd_base
        monkeypatch.setattr(fd_base, "PER_SAMPLE_SPECTRUM_BYTES", 0)
    torch.manual_seed(0)
    fd = perturb_(FDConv2d(24, 32, 3, padding=1, kernel_num=8)).train()
    compiled = torch.compile(copy.deepcopy(fd))
    # batch 4: with 2 samples, KSM's training-mode BatchNorm makes the gradient of the layer before it
    # (KSM_Global.fc) a near-cancellation, and eager and compiled round-off differ by up to 3e-4 there
    x = torch.randn(4, 24, size, size)
    xe, xc = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ye, yc = fd(xe), compiled(xc)
    assert max_relative_error(yc, ye) <= 1e-5
    ye.square().mean().backward()
    yc.square().mean().backward()
    assert max_relative_error(xc.grad, xe.grad) <= 1e-4
    ge = dict(fd.named_parameters())
    for name, p in compiled.named_parameters():
        assert max_relative_error(p.grad, ge[name.removeprefix("_orig_mod.")].grad) <= 1e-4, name


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("size", [8, 3], ids=["conv", "unfold"])
def test_autocast_keeps_ffts_in_float32_and_trains(size, dtype, train, monkeypatch):
    seen = []
    for name in ("fft", "ifft", "rfft", "irfft", "rfft2", "irfft2"):
        original = getattr(torch.fft, name)

        def wrapped(inp, *args, _original=original, **kwargs):
            seen.append(inp.dtype)
            return _original(inp, *args, **kwargs)

        monkeypatch.setattr(torch.fft, name, wrapped)
    fd = perturb_(FDConv2d(32, 32, 3, padding=1, kernel_num=8)).train(train)
    x = torch.randn(2, 32, size, size)
    reference = fd(x)
    reference.square().mean().backward()
    reference_grads = {name: p.grad for name, p in fd.named_parameters()}
    fd.zero_grad(set_to_none=True)
    seen.clear()                                          # only the autocast run's FFTs count
    with torch.autocast("cpu", dtype=dtype):
        out = fd(x)
    assert out.dtype == dtype
    out.float().square().mean().backward()              # backward FFTs run too
    for p in (fd.dft_weight, fd.KSM_Global.spatial_fc.bias, fd.bias):
        assert p.grad is not None and p.grad.dtype == p.dtype and torch.isfinite(p.grad).all()
    assert seen and all(d in (torch.float32, torch.complex64) for d in seen), set(seen)
    assert max_relative_error(out.float(), reference) <= 3e-2
    # the kernel is kept in the autocast dtype for backward: gradients stay within half-precision error
    for name in ("dft_weight", "KSM_Local.conv.weight", "KSM_Global.kernel_fc.weight"):
        grad = dict(fd.named_parameters())[name].grad
        assert max_relative_error(grad, reference_grads[name]) <= 3e-2, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens", [3, 40], ids=["kernel_folds", "tokens_scale"])
def test_fdlinear_autocast_runs_in_the_autocast_dtype_and_trains(tokens, dtype):
    """FDLinear's GEMM has its own backward (per_sample_gemm): under autocast it must still run in the
    autocast dtype, and hand float32 gradients to the float32 kernel builder and parameters."""
    layer = perturb_(FDLinear(24, 40, kernel_num=8)).train()
    x = torch.randn(2, tokens, 24)
    reference = layer(x)
    with torch.autocast("cpu", dtype=dtype):
        out = layer(x)
    assert out.dtype == dtype
    out.float().square().mean().backward()
    for p in (layer.dft_weight, layer.KSM_Global.filter_fc.bias, layer.KSM_Local.conv.weight, layer.bias):
        assert p.grad is not None and p.grad.dtype == p.dtype and torch.isfinite(p.grad).all()
    assert max_relative_error(out.float(), reference) <= 3e-2


@pytest.mark.parametrize("height,width", [(56, 56), (196, 20), (7, 9), (28, 13)])
def test_separable_low_pass_equals_masked_fft(height, width):
    x = torch.randn(2, 3, height, width, dtype=torch.float64)
    masks = low_pass_masks(height, width, (0.25, 0.125, 0.0625), dtype=torch.float64)
    spectrum = torch.fft.rfft2(x, norm="ortho")
    for low, mask in zip(low_pass_list(x), masks, strict=True):
        expected = torch.fft.irfft2(spectrum * mask, s=(height, width), norm="ortho")
        assert torch.allclose(low, expected, atol=1e-12)


def test_fd_grad_checkpointing_kwarg_gives_same_gradients():
    torch.manual_seed(0)
    plain = timm.create_model("resnet18_fdconv", num_classes=4)
    ckpt = timm.create_model("resnet18_fdconv", num_classes=4, fd_grad_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.grad_checkpointing and not plain.grad_checkpointing
    x = torch.randn(2, 3, 32, 32)
    for model in (plain, ckpt):
        model.train()(x).square().mean().backward()
    grads = dict(plain.named_parameters())
    for name, p in ckpt.named_parameters():
        assert torch.allclose(p.grad, grads[name].grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("k,size", [(3, 5), (1, 4)])
def test_recompute_kernel_gives_same_gradients_and_keeps_no_kernel(k, size):
    torch.manual_seed(0)
    cin, cout = 96, 128
    keep = perturb_(FDConv2d(cin, cout, k, padding=k // 2, kernel_num=16)).train()
    recompute = copy.deepcopy(keep)
    recompute.recompute_kernel = True
    x = torch.randn(4, cin, size, size)
    outs = []
    for layer in (keep, recompute):
        xi = x.clone().requires_grad_()
        y = layer(xi)
        y.square().mean().backward()
        outs.append((y.detach(), xi.grad, {n: p.grad for n, p in layer.named_parameters()}))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.allclose(outs[0][1], outs[1][1], rtol=1e-5, atol=1e-7)
    for name, grad in outs[0][2].items():
        assert torch.allclose(outs[1][2][name], grad, rtol=1e-4, atol=1e-7), name
    # BatchNorm of KSM runs once per forward, not again in the recomputation
    assert torch.equal(keep.KSM_Global.bn.num_batches_tracked, recompute.KSM_Global.bn.num_batches_tracked)
    kernel_bytes = cout * cin * k * k * 4
    # live bytes, not saved_tensors_hooks: checkpoint's own hooks hide what is saved inside it
    live = [_live_bytes_after(lambda m=m: m(torch.randn(6, cin, size, size, requires_grad=True)))
            for m in (keep, recompute)]
    assert live[0] - live[1] >= 6 * kernel_bytes * 0.9, live


def test_recompute_kernel_model_kwarg_reaches_every_fd_layer():
    from fdconv_zoo.layers.conversion import fd_layers

    model = timm.create_model("resnet18_fdconv", fd_recompute_kernel=True)
    assert all(layer.recompute_kernel for layer in fd_layers(model).values())
    assert not any(layer.recompute_kernel for layer in fd_layers(timm.create_model("resnet18_fdconv")).values())


def _outputs_and_grads(layer, x):
    x = x.clone().requires_grad_()
    y = layer(x)
    y.square().mean().backward()
    return y.detach(), x.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}


@pytest.mark.parametrize("recompute", [False, True], ids=["keep", "recompute"])
@pytest.mark.parametrize("kind,size", [("k3", 3), ("k3", 9), ("k1", 3), ("linear", 0)])
def test_per_sample_chunks_match_the_whole_batch(kind, size, recompute, monkeypatch):
    """Large layers build and apply kernels one sample at a time; that must be the same math."""
    import fdconv_zoo.layers.fd_base as fd_base

    torch.manual_seed(0)
    if kind == "linear":
        layer, x = FDLinear(24, 40, kernel_num=8), torch.randn(3, 5, 24)
    else:
        k = int(kind[1])
        layer, x = FDConv2d(24, 40, k, padding=k // 2, kernel_num=8), torch.randn(3, 24, size, size)
    layer = perturb_(layer).train()
    layer.recompute_kernel = recompute
    chunked = copy.deepcopy(layer)
    assert layer._samples_per_chunk(3, x.device) == 3
    whole = _outputs_and_grads(layer, x)
    monkeypatch.setattr(fd_base, "PER_SAMPLE_SPECTRUM_BYTES", 0)
    assert chunked._samples_per_chunk(3, x.device) == 1
    parts = _outputs_and_grads(chunked, x)
    # the spec's metric: one ulp of an output of magnitude 8 is already ~1e-6, so an elementwise atol
    # of 1e-6 failed on round-off (grouped conv with 1 vs 3 groups, fused FBM multiply-adds)
    assert max_relative_error(parts[0], whole[0]) <= 1e-5
    assert torch.allclose(parts[1], whole[1], rtol=1e-4, atol=1e-7)
    for name, grad in whole[2].items():
        assert torch.allclose(parts[2][name], grad, rtol=1e-4, atol=1e-6), name


def test_accelerators_build_kernels_in_batch_chunks_not_per_sample():
    """One sample at a time is a CPU allocator/cache choice; on a GPU it would be launches per sample.

    The policy alone (no GPU needed): ResNet-50's layer4 3x3 spectrum (1536 x 769, 9.0 MiB) runs per
    sample on CPU, and in chunks of up to 28 samples on CUDA.
    """
    layer = FDConv2d(512, 512, 3, padding=1)
    assert layer._samples_per_chunk(32, torch.device("cpu")) == 1
    assert layer._samples_per_chunk(32, torch.device("cuda")) == 28
    assert layer._samples_per_chunk(4, torch.device("cuda")) == 4
    assert FDConv2d(16, 16, 3)._samples_per_chunk(32, torch.device("cpu")) == 32


@pytest.mark.parametrize("k,size", [(3, 3), (1, 3), (1, 12), (3, 12)])
def test_per_sample_chunks_keep_channels_last(k, size, monkeypatch):
    import fdconv_zoo.layers.fd_base as fd_base

    monkeypatch.setattr(fd_base, "PER_SAMPLE_SPECTRUM_BYTES", 0)
    layer = perturb_(FDConv2d(24, 40, k, padding=k // 2, kernel_num=8)).eval()
    x = torch.randn(2, 24, size, size).contiguous(memory_format=torch.channels_last)
    y = layer(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, layer(x.contiguous()), rtol=1e-5, atol=1e-6)


def test_fft_floor_covers_every_fd_layer_once():
    from fdconv_zoo.layers.fd_base import FDKernelBase
    from fdconv_zoo.tools.benchmark import fft_floor, format_fft_floor

    model = timm.create_model("resnet18_fdconv")
    fd_layers = [m for m in model.modules() if isinstance(m, FDKernelBase)]
    rows = fft_floor("resnet18_fdconv", repeats=1)
    assert sum(r["layers"] for r in rows) == len(fd_layers)
    assert {(r["rows"], r["cols"]) for r in rows} == {(m.out_channels * m._k, m.in_channels * m._k) for m in fd_layers}
    assert all(r["ms"] > 0 for r in rows)
    assert "all FD layers" in format_fft_floor(rows, plain_ms=10.0)


@pytest.mark.parametrize("make,shape,channels_last", [(lambda: FDLinear(32, 48), (2, 5, 32), False),
                                                      (lambda: FDConv2d(32, 48, 1), (2, 32, 8, 8), True)])
@pytest.mark.parametrize("per_sample", [False, True])
def test_kernel_gradient_reaches_the_builder_contiguous(make, shape, channels_last, per_sample, monkeypatch):
    """The kernel builder's backward runs along the kernel's last axis (gate products, per-sample rfft);
    a transposed kernel gradient, as autograd's ``bmm(tokens, K^T)`` gives FDLinear, made each several times slower."""
    import fdconv_zoo.layers._ops.kernel_builder as fdw
    import fdconv_zoo.layers.fd_base as fd_base

    if per_sample:
        monkeypatch.setattr(fd_base, "PER_SAMPLE_SPECTRUM_BYTES", 0)
    layouts = []
    backward = fdw._ModulatedKernels.backward

    def recording_backward(ctx, grad):
        layouts.append(grad.is_contiguous())
        return backward(ctx, grad)

    monkeypatch.setattr(fdw._ModulatedKernels, "backward", staticmethod(recording_backward))
    layer = perturb_(make()).train()
    x = torch.randn(shape, requires_grad=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    layer(x).square().sum().backward()
    assert layouts and all(layouts)


def test_fbm_decomposes_the_input_once_in_backward(monkeypatch):
    """FBM's backward keeps only its input and decomposes it into bands once more, not once per use."""
    import fdconv_zoo.layers._ops.band_modulation as fbm_module

    calls = []
    decompose = fbm_module._bands_and_gains
    monkeypatch.setattr(fbm_module, "_bands_and_gains", lambda *a: calls.append(1) or decompose(*a))
    layer = perturb_(FDConv2d(8, 8, 3, padding=1, kernel_num=4)).train()
    y = layer(torch.randn(2, 8, 6, 6, requires_grad=True))
    assert len(calls) == 1
    y.square().sum().backward()
    assert len(calls) == 2
    assert layer.FBM.freq_weight_conv_list[0].weight.grad is not None


@pytest.mark.parametrize("size", [8, 3], ids=["conv", "unfold"])
def test_fbm_backward_recomputes_in_the_forward_autocast_state(size, monkeypatch):
    """Backward runs outside autocast, as in a training loop; the bands and gains FBM's backward recomputes
    must be bitwise the forward's (its bfloat16 gain conv), not a float32 recomputation."""
    import fdconv_zoo.layers._ops.band_modulation as fbm_module

    torch.manual_seed(0)
    layer = perturb_(FDConv2d(24, 40, 3, padding=1, kernel_num=8)).train()
    computed = []
    decompose = fbm_module._bands_and_gains
    monkeypatch.setattr(fbm_module, "_bands_and_gains", lambda *a: computed.append(decompose(*a)) or computed[-1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(4, 24, size, size, requires_grad=True))
    y.float().square().mean().backward()
    (lows_forward, gains_forward), (lows_backward, gains_backward) = computed
    assert torch.equal(gains_forward, gains_backward)
    assert all(torch.equal(a, b) for a, b in zip(lows_forward, lows_backward, strict=True))


@pytest.mark.parametrize("lowfreq_att", [False, True])
@pytest.mark.parametrize("height,width", [(9, 7), (5, 16)])
def test_fbm_gradcheck_float64(height, width, lowfreq_att):
    """FBM's hand-written backward (bands, gains, the gain conv as GEMM + unfold) against finite differences."""
    torch.manual_seed(0)
    fbm = FrequencyBandModulation(5, lowfreq_att=lowfreq_att).double()
    for p in fbm.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 5, height, width, dtype=torch.float64, requires_grad=True)
    params = dict(fbm.named_parameters())

    def fn(x, *tensors):
        return torch.func.functional_call(fbm, dict(zip(params, tensors, strict=True)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params.values()), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_input_changed_in_place_before_backward_is_an_error():
    """FBM's backward recomputes its bands from the saved input: autograd's version check guards it."""
    layer = FDConv2d(8, 8, 3, padding=1, kernel_num=4).train()
    x = torch.randn(2, 8, 6, 6)
    y = layer(x)
    x.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_a_process_whose_backward_failed_exits_cleanly():
    """torch keeps a failed backward's pending nodes until the next backward; the process must still exit
    cleanly after printing the error (Python saved-tensor hooks on such nodes once made it segfault)."""
    script = textwrap.dedent("""
        import torch
        from fdconv_zoo import FDConv2d
        layer = FDConv2d(8, 8, 3, padding=1, kernel_num=4).train()
        x = torch.randn(2, 8, 6, 6)
        y = layer(x)
        x.mul_(2)
        y.sum().backward()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "modified by an inplace operation" in done.stderr
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])


@pytest.mark.parametrize("k,size", [(3, 5), (1, 4)])
def test_frozen_spectrum_gives_the_same_ksm_gradients(k, size):
    """With dft_weight frozen, the kernel builder's backward skips the FDW kernel's gradient (one kernel-sized
    temporary less); the local gate's and the gains' parameters get the same gradients."""
    torch.manual_seed(0)
    trained = perturb_(FDConv2d(24, 40, k, padding=k // 2, kernel_num=8)).train()
    frozen = copy.deepcopy(trained)
    frozen.dft_weight.requires_grad_(False)
    x = torch.randn(3, 24, size, size)
    for layer in (trained, frozen):
        layer(x).square().mean().backward()
    assert frozen.dft_weight.grad is None
    for name, p in frozen.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, dict(trained.named_parameters())[name].grad, rtol=1e-4, atol=1e-7), name


@pytest.mark.parametrize("size", [8, 3], ids=["conv", "unfold"])
def test_a_checkpoint_around_the_layer_keeps_what_it_drops(size):
    """Inside a non-reentrant checkpoint (timm's block checkpointing), FDConv2d's own saved-tensor hooks must
    stay out of the way: torch applies only the innermost hooks, and ours kept the per-sample kernel (and
    everything else the convolution saves) that the checkpoint meant to drop."""
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    layer = perturb_(FDConv2d(48, 64, 3, padding=1, kernel_num=8)).train()
    x = torch.randn(4, 48, size, size)
    plain = _outputs_and_grads(layer, x)
    layer.zero_grad(set_to_none=True)
    xc = x.clone().requires_grad_()
    y = checkpoint(layer, xc, use_reentrant=False)
    y.square().mean().backward()
    assert torch.equal(y.detach(), plain[0])
    assert torch.allclose(xc.grad, plain[1], rtol=1e-5, atol=1e-7)
    for name, p in layer.named_parameters():
        assert torch.allclose(p.grad, plain[2][name], rtol=1e-5, atol=1e-7), name
    kernel_bytes = 4 * 64 * 48 * 9 * 4
    input_and_output = x.numel() * 4 + y.numel() * 4     # the checkpoint keeps its input; the output is returned
    live = _live_bytes_after(lambda: checkpoint(layer, x.clone().requires_grad_(), use_reentrant=False))
    assert live < input_and_output + kernel_bytes / 10, (live, input_and_output, kernel_bytes)


def test_layer_table_memory_sees_the_3x3_kernel():
    """The bench's per-layer memory column: saved-tensor hooks around an FDConv2d saw nothing its own hooks
    handled (the 3x3 kernel read as ~2% of its size); live bytes see the per-sample kernels."""
    from fdconv_zoo.tools.benchmark import _kept_for_backward_mib

    layer = perturb_(FDConv2d(48, 64, 3, padding=1, kernel_num=8)).train()
    x = torch.randn(2, 48, 4, 4, requires_grad=True)
    kernels = 2 * 64 * 48 * 9 * 4
    assert _kept_for_backward_mib(lambda: layer(x)) * 2**20 >= kernels
    conv = torch.nn.Conv2d(48, 64, 3, padding=1)
    assert _kept_for_backward_mib(lambda: conv(x)) == 0     # input and weight exist already: nothing new kept
