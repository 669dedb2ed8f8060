"""scaled_dot_product_attention folds inputs with several leading dims (Swin's
B x nW x heads x N x d) to the 4-D calls PyTorch's fused kernel takes, for every way a mask can
broadcast, with the same values and gradients as the plain formula."""
import pytest
import torch

from mmvtx.models.layers import scaled_dot_product_attention

B, NW, HEADS, N, D = 2, 3, 4, 7, 8


def _reference(q, k, v, mask, scale):
    attn = (q.double() @ k.double().transpose(-2, -1)) * scale
    if mask is not None:
        attn = attn + mask.double()
    return attn.softmax(-1) @ v.double()


@pytest.mark.parametrize('mask_shape', [
    None, (HEADS, N, N), (NW, HEADS, N, N), (NW, 1, N, N), (1, NW, HEADS, N, N),
    (B, NW, HEADS, N, N), (B, 1, HEADS, N, N), (N, N), (NW, HEADS, 1, N)])
def test_folded_attention_matches_the_formula(mask_shape):
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, NW, HEADS, N, D, requires_grad=True) for _ in range(3))
    mask = torch.randn(mask_shape, requires_grad=True) if mask_shape else None
    out = scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    ref = _reference(q, k, v, mask, 0.3)
    assert out.shape == (B, NW, HEADS, N, D)
    assert (out.double() - ref).abs().max() < 1e-5
    inputs = (q, k, v) + ((mask,) if mask is not None else ())
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        assert (a.double() - b).abs().max() < 1e-4


@pytest.mark.parametrize('mask_shape', [(NW, HEADS, 49, 49), (HEADS, 49, 49)])
def test_swin_windows_run_the_fused_kernel(mask_shape):
    """W-MSA (bias only, a permuted view of a parameter) and SW-MSA (bias + mask per window)
    at inference: the fused CPU kernel, not the math path."""
    q, k, v = (torch.randn(B, NW, HEADS, 49, 32) for _ in range(3))
    table = torch.randn(*mask_shape[:-3], 49, 49, HEADS, requires_grad=True)
    mask = table.movedim(-1, -3)  # like Swin's bias: a non-contiguous view needing a gradient
    with torch.no_grad(), torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    names = {e.key for e in prof.key_averages()}
    assert 'aten::_scaled_dot_product_flash_attention_for_cpu' in names, names
    assert (out.double() - _reference(q, k, v, mask, 32 ** -0.5)).abs().max() < 1e-5
