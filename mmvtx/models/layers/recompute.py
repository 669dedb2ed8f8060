"""Two memory savers for training, exact in value and gradient (no approximation):

* :func:`biased_attention`: attention with an additive bias that needs a gradient (Swin's
  relative position bias). PyTorch's fused CPU/GPU kernels give no gradient for ``attn_mask``
  and fall back to the math path, which keeps every ``heads x N x N`` probability map for
  backward. Here the forward runs the fused kernel (``scaled_dot_product_attention`` with
  bias + mask as ``attn_mask``) without autograd, and the backward recomputes the probabilities
  of one call at a time (in float32, also under AMP), so no map outlives its block.
* :func:`gelu_linear`: ``linear(gelu(h))`` that keeps ``h`` only, not ``gelu(h)`` as well (the
  MLP's widest activation), recomputing the GELU (elementwise) in backward.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .attention import scaled_dot_product_attention
from .linear import linear, linear_backward


def _probs(q, k, bias, mask, scale):
    """softmax(q k^T * scale + bias + mask) in float32."""
    attn = torch.matmul(q * scale, k.transpose(-2, -1))
    attn = attn.to(torch.promote_types(attn.dtype, torch.float32))
    attn += bias if mask is None else bias + mask
    return attn.softmax(dim=-1)


class _BiasedAttention(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q, k, v, bias, mask, scale):
        attn_mask = bias if mask is None else bias + mask
        out = scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype),
                                           scale=scale)
        ctx.save_for_backward(q, k, v, bias, mask)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, mask = ctx.saved_tensors
        scale = ctx.scale
        # probabilities and their gradient in float32, GEMMs in the inputs' dtype (AMP)
        p32 = _probs(q, k, bias, mask, scale)
        p = p32.to(q.dtype)
        grad_out = grad_out.to(q.dtype)
        grad_v = torch.matmul(p.transpose(-2, -1), grad_out) if ctx.needs_input_grad[2] else None
        del p
        grad_p = torch.matmul(grad_out, v.transpose(-2, -1)).to(p32.dtype)
        # softmax backward, fused: dS = P * (dP - sum(dP * P))
        grad_s32 = torch.ops.aten._softmax_backward_data(grad_p, p32, -1, p32.dtype)
        del p32, grad_p
        grad_s = grad_s32.to(q.dtype)
        grad_q = torch.matmul(grad_s, k) * scale if ctx.needs_input_grad[0] else None
        grad_k = torch.matmul(grad_s.transpose(-2, -1), q * scale) \
            if ctx.needs_input_grad[1] else None
        grad_bias = None
        if ctx.needs_input_grad[3]:
            lead = grad_s32.dim() - bias.dim()
            grad_bias = grad_s32.sum(dim=tuple(range(lead))) if lead else grad_s32
            for d in range(bias.dim()):  # dims the bias broadcast over
                if bias.shape[d] == 1 and grad_bias.shape[d] != 1:
                    grad_bias = grad_bias.sum(dim=d, keepdim=True)
            grad_bias = grad_bias.to(bias.dtype)
        return grad_q, grad_k, grad_v, grad_bias, None, None


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                     mask: Optional[torch.Tensor] = None,
                     scale: Optional[float] = None) -> torch.Tensor:
    """``softmax(q k^T * scale + bias + mask) v``; ``bias`` may need a gradient, ``mask`` not.
    ``bias``/``mask`` broadcast against the ``... x N x N`` attention logits."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if not torch.is_grad_enabled() or not (q.requires_grad or bias.requires_grad):
        attn_mask = bias if mask is None else bias + mask
        return scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype),
                                            scale=scale)
    return _BiasedAttention.apply(q, k, v, bias, mask, scale)


class _GeluLinear(torch.autograd.Function):

    @staticmethod
    def forward(ctx, h, weight, bias):
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None
        return linear(F.gelu(h), weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        h, weight = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad
        grad_h = grad_weight = grad_bias = None
        if need_w or (need_b and ctx.has_bias):
            _, grad_weight, grad_bias = linear_backward(
                grad_out, F.gelu(h), weight, (False, need_w, need_b and ctx.has_bias))
        if need_h:  # the input gradient reads only the input's shape: h stands in for gelu(h)
            grad_g, _, _ = linear_backward(grad_out, h, weight, (True, False, False))
            grad_h = torch.ops.aten.gelu_backward(grad_g, h)
        return grad_h, grad_weight, grad_bias


def gelu_linear(h: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear(F.gelu(h), weight, bias)`` keeping only ``h`` for backward."""
    if not torch.is_grad_enabled() or h.dtype not in (torch.float32, torch.float64) or not (
            h.requires_grad or weight.requires_grad):
        return linear(F.gelu(h), weight, bias)
    return _GeluLinear.apply(h, weight, bias)
