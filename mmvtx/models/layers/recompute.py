"""``linear(gelu(h))`` for the transformer MLP that keeps ``h`` only for backward, not ``gelu(h)``
as well (the MLP's widest activation), recomputing the GELU (elementwise) in backward. Exact in
value and gradient."""
from typing import Optional

import torch
import torch.nn.functional as F

from .linear import linear, linear_backward


class _GeluLinear(torch.autograd.Function):

    @staticmethod
    def forward(ctx, h, weight, bias, onednn):
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None
        ctx.onednn = onednn
        return linear(F.gelu(h), weight, bias, onednn)

    @staticmethod
    def backward(ctx, grad_out):
        h, weight = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = grad_weight = grad_bias = None
        if need_w or (need_b and ctx.has_bias):
            _, grad_weight, grad_bias = linear_backward(
                grad_out, F.gelu(h), weight, (False, need_w, need_b and ctx.has_bias), ctx.onednn)
        if need_h:  # the input gradient reads only the input's shape: h stands in for gelu(h)
            grad_g, _, _ = linear_backward(grad_out, h, weight, (True, False, False), ctx.onednn)
            grad_h = torch.ops.aten.gelu_backward(grad_g, h)
        return grad_h, grad_weight, grad_bias, None


def gelu_linear(h: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                onednn: bool = True) -> torch.Tensor:
    """``F.linear(F.gelu(h), weight, bias)`` keeping only ``h`` for backward (``onednn`` as in
    :func:`.linear.linear`)."""
    if not torch.is_grad_enabled() or h.dtype not in (torch.float32, torch.float64) or not (
            h.requires_grad or weight.requires_grad):
        return linear(F.gelu(h), weight, bias, onednn)
    return _GeluLinear.apply(h, weight, bias, onednn)
