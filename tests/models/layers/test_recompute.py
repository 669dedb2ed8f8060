"""The memory savers are exact: gradients checked in float64 against finite differences and
against the plain autograd path."""
import torch
import torch.nn.functional as F

from mmvtx.models.layers.attention import attention
from mmvtx.models.layers.recompute import gelu_linear


def biased_attention(q, k, v, bias, mask=None, scale=None):
    return attention(q, k, v, bias=bias, mask=mask, scale=scale)


def _qkv(*shape):
    return [torch.randn(*shape, dtype=torch.double, requires_grad=True) for _ in range(3)]


def test_biased_attention_gradients():
    q, k, v = _qkv(1, 2, 2, 4, 3)  # batch, windows, heads, tokens, head_dim
    bias = torch.randn(2, 4, 4, dtype=torch.double, requires_grad=True)
    mask = (torch.rand(2, 1, 4, 4) > 0.6).double() * -100  # per window, broadcast over heads
    for m in (mask, None):
        assert torch.autograd.gradcheck(lambda q, k, v, b: biased_attention(q, k, v, b, m, 0.3),
                                        (q, k, v, bias))


def test_biased_attention_matches_plain_autograd():
    q, k, v = (t.float().detach().requires_grad_() for t in _qkv(2, 4, 49, 16))
    bias = torch.randn(4, 49, 49, requires_grad=True)
    out = biased_attention(q, k, v, bias, scale=0.25)
    ref = ((q @ k.transpose(-2, -1)) * 0.25 + bias).softmax(-1) @ v
    assert torch.allclose(out, ref, atol=1e-5)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v, bias), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v, bias), g)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-4)


def test_gelu_linear_gradients_and_value():
    h = torch.randn(3, 7, 6, dtype=torch.double, requires_grad=True)
    w = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    b = torch.randn(4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(gelu_linear, (h, w, b))
    assert torch.allclose(gelu_linear(h, w, b), F.linear(F.gelu(h), w, b))
