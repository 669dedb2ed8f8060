"""The oneDNN linear path gives F.linear's values and gradients (checked against float64),
really runs oneDNN's convolution on float32 CPU tensors, and steps aside everywhere else."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmvtx.models.layers import linear as L
from mmvtx.models.layers.linear import Linear, linear, uses_onednn
from mmvtx.models.layers.recompute import gelu_linear


def _float64_reference(fn, *tensors):
    """fn's output and input gradients (for a fixed random output gradient) in float64."""
    leaves = [t.detach().double().requires_grad_() for t in tensors]
    out = fn(*leaves)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    return out, torch.autograd.grad(out, leaves, grad), grad


def _assert_close(a, b, rtol=1e-5):
    scale = b.abs().max().item() + 1e-12
    assert (a.double() - b).abs().max().item() <= rtol * scale, (a.double() - b).abs().max()


@pytest.mark.parametrize('lead,k,n,bias,transposed', [
    ((2, 300), 96, 288, True, False),    # Swin-T stage-1 qkv
    ((2, 3, 5), 16, 7, False, False),    # 4-D input, no bias
    ((40, 6), 12, 12, True, True),       # non-contiguous input (a transposed view)
    ((1,), 8, 3, True, False),           # a single token
])
def test_linear_matches_float64_values_and_gradients(lead, k, n, bias, transposed):
    torch.manual_seed(0)
    x = torch.randn(*lead, k)
    if transposed:
        x = torch.randn(lead[1], lead[0], k).transpose(0, 1)
    w = torch.randn(n, k) * k ** -0.5
    b = torch.randn(n) if bias else None
    tensors = [x, w] + ([b] if bias else [])
    assert uses_onednn(x, w)

    def fn(x, w, b=None):
        return F.linear(x, w, b)

    ref, ref_grads, grad = _float64_reference(fn, *tensors)
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = linear(*leaves)
    assert out.shape == ref.shape and out.dtype == torch.float32
    grads = torch.autograd.grad(out, leaves, grad.float())
    _assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        _assert_close(g, r)


@pytest.mark.parametrize('threads', [1, 2])
def test_float32_cpu_linear_runs_onednn(threads):
    """PyTorch keeps small or single-threaded 1x1 convolutions off oneDNN unless the batch is
    >= 16; the token rows are split into such a batch, forward and backward."""
    x, w = torch.randn(64, 32, requires_grad=True), torch.randn(48, 32, requires_grad=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            linear(x, w).sum().backward()
    finally:
        torch.set_num_threads(before)
    names = {e.key for e in prof.key_averages()}
    assert 'aten::mkldnn_convolution' in names, names
    assert not {'aten::addmm', 'aten::mm', 'aten::_slow_conv2d_forward'} & names, names


def test_gelu_linear_float32_matches_float64():
    torch.manual_seed(0)
    h, w, b = torch.randn(2, 50, 64), torch.randn(16, 64) / 8, torch.randn(16)
    assert uses_onednn(h, w)
    ref, ref_grads, grad = _float64_reference(lambda h, w, b: F.linear(F.gelu(h), w, b), h, w, b)
    leaves = [t.clone().requires_grad_() for t in (h, w, b)]
    out = gelu_linear(*leaves)
    _assert_close(out, ref)
    for g, r in zip(torch.autograd.grad(out, leaves, grad.float()), ref_grads):
        _assert_close(g, r)


def test_other_cases_call_f_linear():
    x, w, b = torch.randn(4, 6, 8), torch.randn(5, 8), torch.randn(5)
    assert not uses_onednn(x.double(), w.double())
    assert not uses_onednn(x.bfloat16(), w.bfloat16())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not uses_onednn(x, w)
        assert linear(x, w, b).dtype == torch.bfloat16  # autocast's linear, as nn.Linear
    assert not uses_onednn(x, w, onednn=False)
    assert torch.equal(linear(x, w, b, onednn=False), F.linear(x, w, b))


def test_onednn_switch_is_read_when_a_module_is_built(monkeypatch):
    """``MMVTX_ONEDNN_LINEAR`` decides for the modules built while it is set; changing it later
    changes no built module (no global state read on every call)."""
    x = torch.randn(4, 6, 8)
    monkeypatch.setenv('MMVTX_ONEDNN_LINEAR', '0')
    off = Linear(8, 5)
    monkeypatch.setenv('MMVTX_ONEDNN_LINEAR', '1')
    on = Linear(8, 5)
    assert (off.onednn, on.onednn) == (False, True)
    assert torch.equal(off(x), F.linear(x, off.weight, off.bias))
    monkeypatch.setenv('MMVTX_ONEDNN_LINEAR', '0')
    assert on.onednn and Linear(8, 5, onednn=True).onednn
    # unset: on for AMD CPUs only (MKL runs generic code there, its AVX-512 kernels on Intel)
    monkeypatch.delenv('MMVTX_ONEDNN_LINEAR')
    monkeypatch.setattr(L, 'cpu_vendor', lambda: 'GenuineIntel')
    assert not Linear(8, 5).onednn
    monkeypatch.setattr(L, 'cpu_vendor', lambda: 'AuthenticAMD')
    assert Linear(8, 5).onednn


def test_linear_module_is_an_nn_linear():
    torch.manual_seed(0)
    ours, ref = Linear(8, 5), nn.Linear(8, 5)
    assert isinstance(ours, nn.Linear)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 8)
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
