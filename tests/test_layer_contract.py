"""What every FD layer and model promises users: no leak, every dtype and memory format, meta-device
construction, export, TorchScript, and batch independence in eval mode."""

import copy
import warnings

import pytest
import timm
import torch
from test_layers import perturb_
from test_perf import _no_graph_breaks
from timm.layers import set_layer_config
from timm.models._manipulate import reinit_non_persistent_buffers
from torch import nn

import fdconv_zoo  # noqa: F401  (registers the *_fdconv models)
from fdconv_zoo import FDConv2d, FDLinear
from fdconv_zoo.tools.benchmark import live_bytes_after
from fdconv_zoo.tools.testing import max_relative_error

# (factory, input shape): the grouped-convolution path, the unfolded (late-layer) path, 1x1, tokens
LAYERS = {
    "k3-conv": (lambda: FDConv2d(24, 32, 3, padding=1, kernel_num=8), (3, 24, 8, 8)),
    "k3-unfold": (lambda: FDConv2d(24, 40, 3, padding=1, kernel_num=8), (3, 24, 3, 3)),
    "k1": (lambda: FDConv2d(24, 32, 1, kernel_num=8), (3, 24, 6, 5)),
    "linear": (lambda: FDLinear(24, 40, kernel_num=8), (3, 7, 24)),
}
# one model per family, at input sizes that keep the tests quick
MODELS = {
    "resnet18_fdconv": (2, 3, 64, 64),
    "convnext_tiny_fdconv": (2, 3, 64, 64),
    "swin_tiny_patch4_window7_224_fdconv": (2, 3, 224, 224),
}


IMPLS = pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
# whole models through the reference formulation are slow on the CPU: the default run keeps the fast path
MODEL_IMPLS = pytest.mark.parametrize("reference", [False, pytest.param(True, marks=pytest.mark.slow)],
                                      ids=["fast", "reference"])


def _choose(module: nn.Module, reference: bool) -> nn.Module:
    for m in module.modules():
        if isinstance(m, (FDConv2d, FDLinear)):
            m.reference = reference
    return module


def _layer(name: str, train: bool, reference: bool = False) -> tuple[nn.Module, torch.Tensor]:
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    return _choose(perturb_(make()).train(train), reference), torch.randn(shape)


def _model(name: str, reference: bool = False) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5, drop_path_rate=0.0)
    return _choose(model, reference), torch.randn(MODELS[name])


def _live_after_calls(module: nn.Module, x: torch.Tensor, calls: int) -> int:
    """Bytes still allocated after ``calls`` forwards with gradients enabled and no backward."""
    module(x)   # warm-up: per-size caches (FBM bases) are filled once

    def run() -> None:
        for _ in range(calls):
            module(x)

    return live_bytes_after(run)


@IMPLS
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_forward_without_backward_frees_its_graph(name, train, reference):
    layer, x = _layer(name, train, reference)
    one_output = layer(x).numel() * 4
    assert _live_after_calls(layer, x.requires_grad_(), 20) < one_output


@MODEL_IMPLS
@pytest.mark.parametrize("name", list(MODELS))
def test_model_forward_without_backward_frees_its_graph(name, reference):
    model, x = _model(name, reference)
    assert _live_after_calls(model.train(), x, 3) < 2**20


@IMPLS
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_cast_to_a_dtype_runs_in_it(name, train, dtype, reference):
    """``layer.to(dtype)`` as ``model.half()`` does: output and gradients in that dtype, values close to float32."""
    layer, x = _layer(name, train, reference)
    reference = copy.deepcopy(layer)(x)
    cast = layer.to(dtype)
    y = cast(x.to(dtype))
    assert y.dtype == dtype
    tolerance = {torch.float64: 1e-5, torch.float16: 2e-2, torch.bfloat16: 8e-2}[dtype]
    assert max_relative_error(y.float(), reference.float()) <= tolerance
    if train:
        y.float().square().mean().backward()
        assert all(p.grad is not None and p.grad.dtype == dtype for p in cast.parameters())


@MODEL_IMPLS
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_model_cast_to_half_precision_trains(dtype, reference):
    model, x = _model("resnet18_fdconv", reference)
    model = model.to(dtype).train()
    y = model(x.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    y.float().logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@MODEL_IMPLS
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(MODELS))
def test_channels_last_model_and_inputs_give_the_same_numbers(name, train, reference):
    """``model.to(memory_format=torch.channels_last)`` (timm's ``--channels-last``) restrides the 4-D spectrum too."""
    model, x = _model(name, reference)
    model.train(train)
    reference = copy.deepcopy(model)
    expected = reference(x)
    restrided = model.to(memory_format=torch.channels_last)
    for inputs in (x, x.contiguous(memory_format=torch.channels_last)):
        y = restrided(inputs)
        assert max_relative_error(y, expected) <= 1e-5
    y.square().mean().backward()
    expected.square().mean().backward()
    grads = dict(reference.named_parameters())
    for n, p in restrided.named_parameters():
        assert max_relative_error(p.grad, grads[n].grad) <= 1e-4, n


@pytest.mark.parametrize("name", list(MODELS))
def test_meta_device_construction_then_to_empty_and_load(name):
    """Large-model loading: build on the meta device, ``to_empty()``, timm's buffer re-init, ``load_state_dict``."""
    model, x = _model(name)
    model.eval()
    with torch.device("meta"):
        empty = timm.create_model(name, num_classes=5)
    empty = empty.to_empty(device="cpu")
    rebuilt = reinit_non_persistent_buffers(empty)
    assert sum(isinstance(empty.get_submodule(n), (FDConv2d, FDLinear)) for n in rebuilt) > 0
    empty.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(empty.eval()(x), model(x))
    # the group-id cache is not poisoned by the meta build
    assert all(m.group_ids.device.type == "cpu" for m in timm.create_model(name).modules() if hasattr(m, "group_ids"))


@IMPLS
@pytest.mark.parametrize("name", ["k3-conv", "k3-unfold", "linear"])
def test_layer_exports(name, reference):
    layer, x = _layer(name, False, reference)
    exported = torch.export.export(layer, (x,))
    with torch.no_grad():
        assert max_relative_error(exported.module()(x), layer(x)) <= 1e-6


@pytest.mark.slow
def test_model_exports():
    model, x = _model("resnet18_fdconv")
    model.eval()
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert max_relative_error(exported.module()(x), model(x)) <= 1e-5


@IMPLS
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_compiles_without_graph_breaks(name, train, reference):
    _no_graph_breaks(*_layer(name, train, reference))


def _script(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)      # torch.jit.script is deprecated in favour of export
        return torch.jit.script(module)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_scripts_and_equals_the_fast_path(name, train):
    """TorchScript compiles the reference formulation; its outputs and gradients are the fast path's."""
    layer, x = _layer(name, train)
    scripted = _script(copy.deepcopy(layer))
    x_fast, x_script = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_fast, y_script = layer(x_fast), scripted(x_script)
    assert max_relative_error(y_script, y_fast) <= 1e-5
    y_fast.square().sum().backward()
    y_script.square().sum().backward()
    assert max_relative_error(x_script.grad, x_fast.grad) <= 1e-5
    scripted_grads = dict(scripted.named_parameters())
    for param_name, param in layer.named_parameters():
        assert max_relative_error(scripted_grads[param_name].grad, param.grad) <= 1e-4, param_name


@pytest.mark.parametrize("name", list(MODELS))
def test_model_scripts_under_timms_scriptable_mode(name):
    fast, x = _model(name)
    with set_layer_config(scriptable=True):
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=5, drop_path_rate=0.0)
    model.load_state_dict(fast.state_dict())
    scripted = _script(model.eval())
    with torch.no_grad():
        assert max_relative_error(scripted(x), fast.eval()(x)) <= 1e-5


@MODEL_IMPLS
@pytest.mark.parametrize("name", list(MODELS))
def test_eval_outputs_do_not_depend_on_the_rest_of_the_batch(name, reference):
    model, x = _model(name, reference)
    model.eval()
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(x.shape[0])])
    assert max_relative_error(together, alone) <= 1e-5


class _FrozenNoEps(nn.Module):
    """A frozen BatchNorm the way transformers' DETR writes it: buffers only, its epsilon fixed, no ``eps``."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.register_buffer(name, getattr(bn, name).detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        return x * scale[None, :, None, None] + (self.bias - self.running_mean * scale)[None, :, None, None]


@pytest.mark.parametrize("frozen", ["timm", "no-eps"])
@pytest.mark.parametrize("name", ["k3-conv", "linear"])
def test_a_frozen_batchnorm_in_ksm_applies_the_running_statistics(name, frozen):
    """Frameworks swap every BatchNorm2d for a frozen one, KSM's too: it then normalises with the running
    statistics in train and eval mode, batch of one included, as the eval-mode layer does."""
    from timm.layers import freeze_batch_norm_2d

    layer, x = _layer(name, False)
    with torch.no_grad():
        layer.KSM_Global.bn.running_mean.uniform_(-0.5, 0.5)
        layer.KSM_Global.bn.running_var.uniform_(0.5, 2.0)
        expected = layer(x)
    bn = layer.KSM_Global.bn
    layer.KSM_Global.bn = freeze_batch_norm_2d(bn) if frozen == "timm" else _FrozenNoEps(bn)
    assert not isinstance(layer.KSM_Global.bn, nn.BatchNorm2d)
    for train in (True, False):
        layer.train(train)
        assert max_relative_error(layer(x), expected) <= 1e-5
        assert max_relative_error(layer(x[:1]), expected[:1]) <= 1e-5
    layer.train()(x).square().mean().backward()
    assert layer.dft_weight.grad is not None
