"""The layers against the spec's definition, stated independently in the tests (``spec_fdconv``).

Band edges, frequency groups, the Hermitian part of the kernel spectrum, single layers and a whole
network with non-neutral parameters, white-noise input and feature sizes with frequencies on every
band edge.
"""

from fractions import Fraction

import numpy as np
import pytest
import timm
import torch
from spec_fdconv import (
    EDGE_KEPT,
    perturb_fd_parameters_,
    spec_conv_forward,
    spec_group_ids,
    spec_hermitian_part,
    spec_linear_forward,
    spec_low_pass_mask_2d,
    spec_network,
)

import fdconv_zoo  # noqa: F401  (registers the models)
from fdconv_zoo import FDConv2d, FDLinear
from fdconv_zoo.layers._ops.kernel_builder import modulated_kernels, synthesize_kernels
from fdconv_zoo.layers.fbm import DEFAULT_CUTOFFS, frequency_bands, low_pass_masks
from fdconv_zoo.layers.fdw import dft_to_weight, frequency_group_ids
from fdconv_zoo.tools.analysis import basis_cosine_similarity, shared_frequency_pairs
from fdconv_zoo.tools.testing import max_relative_error

FD_TYPES = (FDConv2d, FDLinear)
MASK_SIZES = [(s, s) for s in range(1, 71)] + [(164, 164), (196, 196), (200, 334), (7, 64), (56, 28)]


@pytest.mark.parametrize("height,width", MASK_SIZES, ids=[f"{h}x{w}" for h, w in MASK_SIZES])
def test_band_masks_follow_the_edge_rule(height, width):
    masks = low_pass_masks(height, width, DEFAULT_CUTOFFS, dtype=torch.float64)
    for mask, cutoff in zip(masks, DEFAULT_CUTOFFS, strict=True):
        assert torch.equal(mask.bool(), spec_low_pass_mask_2d(height, width, Fraction(cutoff)))


def test_edge_rule_examples_from_the_spec():
    """56 x 56: |u| = 14 is out of the 1/4 low-pass, |u| = 7 in the 1/8 one; 64 x 64: |u| = 4 in the 1/16 one."""
    assert EDGE_KEPT == {Fraction(1, 4): False, Fraction(1, 8): True, Fraction(1, 16): True}
    quarter, eighth, _ = low_pass_masks(56, 56, DEFAULT_CUTOFFS)
    assert quarter[13, 0] == 1 and quarter[14, 0] == 0 and quarter[56 - 14, 0] == 0
    assert eighth[7, 0] == 1 and eighth[-7, 0] == 1 and eighth[8, 0] == 0 and eighth[0, 7] == 1
    assert low_pass_masks(64, 64, DEFAULT_CUTOFFS)[2][4, 4] == 1
    # float32 fftfreq puts u = 41 of 164 just below 1/4; the exact rule drops it all the same
    assert torch.fft.fftfreq(164, dtype=torch.float32)[41] < 0.25
    assert low_pass_masks(164, 164, DEFAULT_CUTOFFS)[0][41, 0] == 0


@pytest.mark.parametrize("size", [16, 56, 64, 200])
def test_fbm_bands_use_the_masks(size):
    """The band decomposition the layers compute (small GEMMs) is the masked FFT of the spec."""
    x = torch.randn(2, 3, size, size + 8, dtype=torch.float64)
    X = torch.fft.rfft2(x, norm="ortho")
    lows = [torch.fft.irfft2(X * spec_low_pass_mask_2d(size, size + 8, Fraction(c)), s=x.shape[-2:], norm="ortho")
            for c in DEFAULT_CUTOFFS]
    expected = [x - lows[0], lows[0] - lows[1], lows[1] - lows[2], lows[2]]
    for ours, theirs in zip(frequency_bands(x), expected, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-12)


def _radii(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 radius of every rFFT bin (row-major) and its frequency ``(|u'|, v)``."""
    radius = np.sqrt(np.fft.fftfreq(rows)[:, None] ** 2 + np.fft.rfftfreq(cols)[None, :] ** 2).ravel()
    abs_u = np.abs(np.fft.fftfreq(rows, d=1.0 / rows)).round().astype(np.int64)
    freq = np.stack(np.broadcast_arrays(abs_u[:, None], np.arange(cols // 2 + 1)[None, :]), -1).reshape(-1, 2)
    return radius, freq


def _no_near_tie_on_a_border(rows: int, cols: int, n: int) -> bool:
    """True when every chunk border of the float64 sort is unambiguous: the bins within 1e-9 of it all hold
    one frequency ``(|u|, v)`` (then their radii are bitwise equal and both sorts keep row-major order)."""
    radius, freq = _radii(rows, cols)
    order = np.argsort(radius, kind="stable")
    for border in np.cumsum([len(c) for c in np.array_split(order, n)])[:-1]:
        before, after = radius[order[border - 1]], radius[order[border]]
        near = (np.abs(radius - before) < 1e-9) | (np.abs(radius - after) < 1e-9)
        if after - before < 1e-9 and len({tuple(f) for f in freq[near]}) > 1:
            return False
    return True


# shapes whose borders hold no near-tie of distinct frequencies (checked in the test)
FLOAT_SORT_SHAPES = [(9, 15, 7), (15, 64, 64), (40, 3, 16), (33, 96, 64), (99, 192, 64), (192, 99, 64),
                     (384, 33, 16), (60, 64, 64)]


@pytest.mark.parametrize("rows,cols,n", FLOAT_SORT_SHAPES)
def test_groups_equal_a_direct_float64_radius_sort(rows, cols, n):
    assert _no_near_tie_on_a_border(rows, cols, n), "a near-tie sits on a border: pick another shape"
    radius, _ = _radii(rows, cols)
    expected = np.empty(radius.size, dtype=np.int64)
    for g, chunk in enumerate(np.array_split(np.argsort(radius, kind="stable"), n)):
        expected[chunk] = g
    assert np.array_equal(frequency_group_ids(rows, cols, n).numpy().ravel(), expected)


# every FDConv shape of ResNet-50 at n = 64, odd I*k, n not dividing the bins, and n = 1
RESNET50_SHAPES = [(o * k, i * k, 64) for o, i, k in [
    (64, 64, 1), (64, 64, 3), (256, 64, 1), (64, 256, 1), (128, 256, 1), (128, 128, 3), (512, 128, 1),
    (128, 512, 1), (256, 512, 1), (256, 256, 3), (1024, 256, 1), (256, 1024, 1), (512, 1024, 1),
    (512, 512, 3), (2048, 512, 1), (512, 2048, 1)]] + [(60, 99, 7), (144, 96, 64), (7, 8, 35), (21, 5, 1)]


@pytest.mark.parametrize("rows,cols,n", RESNET50_SHAPES)
def test_groups_equal_the_exact_key_definition(rows, cols, n):
    assert np.array_equal(frequency_group_ids(rows, cols, n).numpy(), spec_group_ids(rows, cols, n))


def test_resnet50_has_conjugate_pairs_straddling_group_borders():
    """The authors' grouping: conjugate bins of a self-conjugate column can sit in two groups."""
    straddling = sum(len(shared_frequency_pairs(frequency_group_ids(r, c, n), c)) for r, c, n in RESNET50_SHAPES[:16])
    assert straddling > 0


def _non_hermitian_layer(cin: int, cout: int, k: int, n: int) -> FDConv2d:
    layer = FDConv2d(cin, cout, k, padding=k // 2, kernel_num=n).double()
    with torch.no_grad():
        layer.dft_weight.add_(torch.randn_like(layer.dft_weight) * layer.dft_weight.std())
    return layer


@pytest.mark.parametrize("cin,cout,k,n", [(20, 24, 3, 16), (33, 20, 3, 7), (21, 40, 1, 8), (64, 32, 1, 64)],
                         ids=["even", "odd-Ik", "odd-1x1", "1x1"])
def test_fdw_kernels_are_irfft2_of_the_hermitian_part(cin, cout, k, n):
    layer = _non_hermitian_layer(cin, cout, k, n)
    rows, cols = cout * k, cin * k
    gains = torch.rand(3, n, dtype=torch.float64) / n
    P = torch.view_as_complex(layer.dft_weight[0].detach())
    scale = n * (min(cin, cout) // 2)
    ids = torch.from_numpy(spec_group_ids(rows, cols, n))
    S = scale * gains[:, ids] * P
    hermitian = spec_hermitian_part(S, cols)
    assert not torch.allclose(hermitian, S)                       # the test exercises H
    expected = torch.fft.irfft2(hermitian, s=(rows, cols))
    ours = synthesize_kernels(layer.dft_weight, gains, layer.group_ids, cols, scale)
    assert torch.allclose(ours, expected, rtol=0, atol=1e-12 * expected.abs().max())
    # the layers' builder (FDW x the local gate, sigmoid(0) = 1/2 with a zero local weight)
    local = torch.zeros(rows * k, 3, dtype=torch.float64)
    built = modulated_kernels(layer.dft_weight, gains, local, torch.randn(3, 3, cin, dtype=torch.float64),
                              layer.group_ids, cout, k, scale)
    assert torch.allclose(built, expected / 2, rtol=0, atol=1e-12 * expected.abs().max())
    static = torch.fft.irfft2(spec_hermitian_part(P * (min(cin, cout) // 2), cols), s=(rows, cols))
    assert torch.allclose(dft_to_weight(layer.dft_weight, cout, cin, k),
                          static.view(cout, k, cin, k).permute(0, 2, 1, 3), atol=1e-12)


# (in, out, k, stride, padding, kernel_num, H, W): maps with frequencies on every band edge (16, 32, 48 x 64),
# odd I*k, n not dividing the bins, n = 1, strided, 'same' padding
LAYER_CASES = [
    (32, 48, 3, 1, 1, 64, 16, 16),
    (33, 20, 3, 2, 1, 7, 32, 24),
    (24, 24, 3, 1, "same", 1, 48, 64),
    (40, 64, 1, 1, 0, 64, 16, 8),
    (65, 40, 1, 2, 0, 16, 16, 16),
]


@pytest.mark.parametrize("case", LAYER_CASES, ids=[f"I{c[0]}-O{c[1]}-k{c[2]}-s{c[3]}-n{c[5]}" for c in LAYER_CASES])
@pytest.mark.parametrize("lowfreq_att", [False, True], ids=["", "lowfreq"])
def test_layer_equals_the_spec_on_white_noise(case, lowfreq_att):
    cin, cout, k, stride, padding, n, height, width = case
    layer = FDConv2d(cin, cout, k, stride, padding, kernel_num=n, fbm_lowfreq_att=lowfreq_att)
    perturb_fd_parameters_(layer, FD_TYPES, seed=cin).eval()
    x = torch.randn(3, cin, height, width)
    with torch.no_grad():
        assert max_relative_error(layer(x).double(), spec_conv_forward(layer, x)) <= 1e-5
        assert max_relative_error(layer.double()(x.double()), spec_conv_forward(layer, x)) <= 1e-10


@pytest.mark.parametrize("shape", [(2, 7, 96), (3, 5, 4, 96)])
def test_linear_equals_the_spec(shape):
    layer = perturb_fd_parameters_(FDLinear(96, 40, kernel_num=64), FD_TYPES, seed=3).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        assert max_relative_error(layer(x).double(), spec_linear_forward(layer, x)) <= 1e-5


def _network_against_spec(arch: str, size: tuple[int, int]) -> float:
    torch.manual_seed(0)
    model = perturb_fd_parameters_(timm.create_model(arch, num_classes=10), FD_TYPES, seed=1).eval()
    x = torch.randn(2, 3, *size)                                            # white noise: energy on every edge
    with torch.no_grad():
        return max_relative_error(model(x).double(), spec_network(model, FD_TYPES)(x.double()))


def test_resnet18_equals_the_spec_network():
    """128 x 96: layer1 sees 32 x 24, layer2 16 x 12, layer3 8 x 6: band-edge frequencies at every cutoff."""
    assert _network_against_spec("resnet18_fdconv", (128, 96)) <= 1e-5


def test_resnet50_equals_the_spec_network():
    """256 x 256: the 3x3 layers see 64, 32, 16 and 8: frequencies on every band edge of every stage."""
    assert _network_against_spec("resnet50_fdconv", (256, 256)) <= 1e-5


@pytest.mark.parametrize("cin,cout,k,n", [(64, 64, 3, 64), (128, 128, 3, 64), (33, 20, 3, 7), (96, 384, 1, 64)])
def test_basis_similarity_reports_disjoint_and_shared_pairs(cin, cout, k, n):
    layer = _non_hermitian_layer(cin, cout, k, n)
    exact = basis_cosine_similarity(layer)                     # float64: round-off far below what it measures
    report = basis_cosine_similarity(layer.float())
    assert report.matrix.shape == (n, n)
    assert report.largest_disjoint <= 1e-6 and exact.largest_disjoint <= 1e-12
    assert report.shared_pairs == exact.shared_pairs == shared_frequency_pairs(layer.group_ids, cin * k)
    if report.shared_pairs:
        assert 1e3 * exact.largest_disjoint < exact.largest_shared < 1e-2
    else:
        assert report.largest_shared == exact.largest_shared == 0.0


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_give_the_same_kernels_and_outputs():
    """A converted, perturbed resnet50_fdconv: same per-sample kernels and logits on CPU and CUDA (float32)."""
    torch.manual_seed(0)
    cpu = perturb_fd_parameters_(timm.create_model("resnet50_fdconv"), FD_TYPES, seed=1).eval()
    gpu = timm.create_model("resnet50_fdconv").eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert max_relative_error(gpu(x.cuda()).cpu(), cpu(x)) <= 1e-5
        for name, layer in cpu.named_modules():
            if isinstance(layer, FDConv2d):
                pooled = torch.randn(2, layer.in_channels)
                ours = layer.build_kernel(layer.kernel_factors(pooled)).kernel
                theirs = gpu.get_submodule(name).build_kernel(gpu.get_submodule(name).kernel_factors(pooled.cuda()))
                assert max_relative_error(theirs.kernel.cpu(), ours) <= 1e-5, name


@pytest.mark.parametrize("cin,cout,k,n", [(4, 6, 3, 8), (6, 9, 1, 4)], ids=["3x3", "1x1"])
def test_gradcheck_where_a_conjugate_pair_straddles_groups(cin, cout, k, n):
    """The kernel is built from the Hermitian part; its gradients (spectrum, gains) must be that map's adjoint."""
    layer = perturb_fd_parameters_(_non_hermitian_layer(cin, cout, k, n), FD_TYPES, seed=5).eval()
    assert shared_frequency_pairs(layer.group_ids, cin * k)
    x = torch.randn(2, cin, 5, 4, dtype=torch.float64, requires_grad=True)
    names = ["dft_weight", "KSM_Global.kernel_fc.weight", "KSM_Global.kernel_fc.bias"]
    params = {name: p.detach().clone().requires_grad_(True) for name, p in layer.named_parameters() if name in names}

    def fn(x, *tensors):
        return torch.func.functional_call(layer, dict(zip(params, tensors, strict=True)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params.values()), eps=1e-6, atol=1e-6, rtol=1e-5)
