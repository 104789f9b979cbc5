"""FDW: exact, stable frequency grouping and basis kernels orthogonal wherever their supports are disjoint."""

import pytest
import torch
from spec_fdconv import spec_group_ids

from fdconv_zoo import FDConv2d, FDLinear
from fdconv_zoo.layers._ops import kernel_builder as fdw
from fdconv_zoo.layers.fdw import dft_to_weight, frequency_group_ids, weight_to_dft
from fdconv_zoo.tools.analysis import band_decomposition, basis_cosine_similarity, basis_kernels


@pytest.mark.parametrize("rows,cols,n", [(12, 12, 5), (9, 15, 7), (96, 99, 64), (144, 96, 64), (40, 3, 1), (7, 8, 8)])
def test_groups_partition_the_spectrum_exactly(rows, cols, n):
    ids = frequency_group_ids(rows, cols, n)
    assert ids.shape == (rows, cols // 2 + 1)
    counts = torch.bincount(ids.flatten(), minlength=n)
    expected = torch.tensor([len(c) for c in torch.arange(ids.numel()).tensor_split(n)])
    assert torch.equal(counts, expected)                            # tensor_split's chunk sizes, none empty
    assert torch.equal(ids, torch.from_numpy(spec_group_ids(rows, cols, n)))   # numpy's stable sort


def test_groups_follow_radius_order():
    ids = frequency_group_ids(24, 30, 16)
    fy = torch.fft.fftfreq(24)[:, None]
    fx = torch.fft.rfftfreq(30)[None, :]
    radius = (fy * 1.0) ** 2 + fx**2
    for g in range(15):
        assert radius[ids == g].max() <= radius[ids == g + 1].min() + 1e-12


def test_one_group_per_bin_is_allowed():
    ids = frequency_group_ids(7, 8, 35)                              # 7 x 5 bins
    assert torch.equal(ids.flatten().sort().values, torch.arange(35))


def test_too_many_groups_is_a_clear_error():
    with pytest.raises(ValueError, match=r"kernel_num=500 .*use kernel_num <= 84"):
        FDConv2d(4, 4, 3, kernel_num=500)


@pytest.mark.parametrize("shape", [(1, 37, 24), (3, 37, 24), (2, 5, 8)])
def test_banded_transpose_is_the_transpose(monkeypatch, shape):
    """Large spectra are transposed in bands of source rows (cache-friendly); the bands (7 rows here: the
    last one short) must tile the result exactly."""
    monkeypatch.setattr(fdw, "BANDED_TRANSPOSE_MIN_BYTES", 1024)
    monkeypatch.setattr(fdw, "TRANSPOSE_BAND_BYTES", 7 * 24 * 8)
    x = torch.randn(*shape, dtype=torch.complex64)
    assert torch.equal(fdw._transposed(x), x.transpose(-1, -2).contiguous())
    assert fdw._transposed(x).is_contiguous()


@pytest.mark.parametrize("batch", [1, 3])
def test_gain_map_is_the_same_for_int32_and_int64_ids(batch):
    """FDConv layers keep their group ids in int32 (half the bytes to gather); the map must not change."""
    ids = frequency_group_ids(24, 33, 8)
    gains = torch.rand(batch, 8)
    wide, narrow = fdw._gain_map(gains, ids, 2.0), fdw._gain_map(gains, ids.int(), 2.0)
    assert narrow.is_complex() and torch.equal(wide, narrow)
    assert torch.equal(wide.real, 2.0 * gains[:, ids]) and not wide.imag.any()
    assert FDConv2d(8, 11, 3, kernel_num=8).group_ids.dtype == torch.int32


def test_weight_dft_round_trip():
    w = torch.randn(20, 33, 3, 3)
    dft = weight_to_dft(w)
    assert dft.shape == (1, 60, 33 * 3 // 2 + 1, 2)
    assert torch.allclose(dft_to_weight(dft, 20, 33, 3), w, atol=1e-5)


@pytest.mark.parametrize("layer", [
    lambda: FDConv2d(32, 48, 3, kernel_num=64),
    lambda: FDConv2d(33, 20, 3, kernel_num=7),
    lambda: FDConv2d(64, 128, 1, kernel_num=64),
    lambda: FDLinear(96, 384, kernel_num=64),
], ids=["3x3", "odd", "1x1", "linear"])
def test_basis_kernels_are_orthogonal_and_sum_to_the_weight(layer):
    layer = layer()
    basis = basis_kernels(layer)
    assert basis.shape[0] == layer.kernel_num
    assert torch.allclose(basis.sum(0), layer.static_weight(), atol=1e-5)
    similarity = basis_cosine_similarity(layer)
    assert similarity.largest_disjoint <= 1e-6
    assert torch.allclose(torch.diag(similarity.matrix), torch.ones(layer.kernel_num), atol=1e-5)


def test_band_decomposition_sums_to_the_input():
    x = torch.randn(2, 3, 20, 17)
    bands = band_decomposition(x)
    assert bands.shape == (2, 4, 3, 20, 17)
    assert torch.allclose(bands.sum(1), x, atol=1e-5)
