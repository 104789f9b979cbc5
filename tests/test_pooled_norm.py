"""PooledBatchNorm2d: nn.BatchNorm2d on (B, C) vectors, with a batch of one normalised by the running statistics."""

import pytest
import torch
from torch import nn

from fdconv_zoo.layers.pooled_norm import PooledBatchNorm2d


@pytest.mark.parametrize("momentum", [0.1, None])
def test_training_matches_batchnorm2d_outputs_and_running_statistics(momentum):
    torch.manual_seed(0)
    ours, theirs = PooledBatchNorm2d(6, momentum=momentum), nn.BatchNorm2d(6, momentum=momentum)
    with torch.no_grad():
        for bn in (ours, theirs):
            bn.weight.copy_(torch.linspace(0.5, 1.5, 6))
            bn.bias.copy_(torch.linspace(-1, 1, 6))
    for _ in range(3):
        h = torch.randn(5, 6) * 3 + 1
        torch.testing.assert_close(ours(h), theirs(h[:, :, None, None]).flatten(1))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value)


def test_a_batch_of_one_in_training_uses_the_running_statistics():
    bn = PooledBatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        bn.running_var.fill_(4.0)
    h = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    expected = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(bn.train()(h), expected)
    torch.testing.assert_close(bn.eval()(h), expected)
    assert int(bn.num_batches_tracked) == 0


def test_a_half_module_normalises_float32_inputs():
    bn = PooledBatchNorm2d(4).half().train()
    out = bn(torch.randn(3, 4))
    assert out.dtype == torch.float32 and bn.running_mean.dtype == torch.float16
