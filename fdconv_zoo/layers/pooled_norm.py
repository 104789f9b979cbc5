"""BatchNorm over pooled vectors ``(B, C)``, the normalisation inside dynamic convolutions' attention heads."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PooledBatchNorm2d"]


class PooledBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` of ``(B, C)`` vectors, read as ``(B, C, 1, 1)`` maps (the authors' layout: same state dict).

    Training with more than one sample uses batch statistics and updates the running ones in their own dtype
    (a half model's BatchNorm runs in half). A batch of one has no batch statistics, so it normalises with the
    running statistics instead of raising, as eval mode does; eval computes in the input's dtype.
    A subclass of ``nn.BatchNorm2d``, so frameworks that freeze or synchronise BatchNorm find it.
    """

    def forward(self, h: Tensor) -> Tensor:
        mean, var = self.running_mean, self.running_var
        assert mean is not None and var is not None, "the attention heads' BatchNorm keeps running statistics"
        if self.training and h.shape[0] > 1:
            # nn.BatchNorm2d's training step, written out (TorchScript compiles no super().forward)
            momentum = 0.0 if self.momentum is None else self.momentum
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
                if self.momentum is None:   # cumulative moving average
                    momentum = 1.0 / float(self.num_batches_tracked)
            return F.batch_norm(h.to(mean.dtype), mean, var, self.weight, self.bias, True, momentum,
                                self.eps).to(h.dtype)
        weight = None if self.weight is None else self.weight.to(h.dtype)
        bias = None if self.bias is None else self.bias.to(h.dtype)
        return F.batch_norm(h, mean.to(h.dtype), var.to(h.dtype), weight, bias, False, 0.0, self.eps)
