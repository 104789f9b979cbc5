"""Frequency Band Modulation (docs/method.md, section 3): spatially varying gains on octave bands of the input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._ops.band_modulation import fbm, fbm_no_grad, frequency_bands
from .bands import DEFAULT_CUTOFFS, cutoff_rule, exact_low_pass_masks, kept_frequencies, low_pass_masks
from .fd_reference import band_modulation

__all__ = ["DEFAULT_CUTOFFS", "FrequencyBandModulation", "frequency_bands", "kept_frequencies", "low_pass_masks"]


class FrequencyBandModulation(nn.Module):
    """``x' = sum_j A_j * H_j + L_J`` with ``A_j = 2 * sigmoid(conv3x3(x))``, zero-initialised (``x' = x``)."""

    def __init__(self, in_channels: int, cutoffs: Sequence[float] = DEFAULT_CUTOFFS,
                 lowfreq_att: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        self.cutoffs = tuple(float(c) for c in cutoffs)
        decreasing = list(self.cutoffs) == sorted(self.cutoffs, reverse=True)
        if not self.cutoffs or any(not 0.0 < c <= 0.5 for c in self.cutoffs) or not decreasing:
            raise ValueError(f"FBM cutoffs must be decreasing values in (0, 0.5], got {cutoffs}")
        #: each cutoff as ``(num, den, edge kept)``: the band edges in integers (``bands.cutoff_rule``)
        self.edge_rules = [cutoff_rule(c) for c in self.cutoffs]
        self.lowfreq_att = lowfreq_att
        num_maps = len(self.cutoffs) + int(lowfreq_att)
        self.freq_weight_conv_list = nn.ModuleList(
            nn.Conv2d(in_channels, 1, 3, padding=1, bias=True, device=device, dtype=dtype) for _ in range(num_maps)
        )
        for conv in self.freq_weight_conv_list:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def _gain_conv(self) -> tuple[Tensor, Tensor]:
        weight = torch.cat([c.weight for c in self.freq_weight_conv_list])
        return weight, torch.cat([c.bias for c in self.freq_weight_conv_list])

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.forward_reference(x)
        else:
            return fbm(x, *self._gain_conv(), self.cutoffs)

    def forward_reference(self, x: Tensor) -> Tensor:
        """The plain formulation (``fd_reference.band_modulation``), autograd by torch."""
        gains = []
        for conv in self.freq_weight_conv_list:
            gains.append(2.0 * torch.sigmoid(conv(x)))
        masks = exact_low_pass_masks(x.shape[-2], x.shape[-1], self.edge_rules, x.device)
        return band_modulation(x, gains, masks)

    def modulate(self, x: Tensor) -> Tensor:
        """The forward pass, outside autograd's graph."""
        return fbm_no_grad(x, *self._gain_conv(), self.cutoffs)
