"""Attention for the three backbones: every softmax(QK^T)V goes through :func:`attention`, so
the choice of kernel lives here and nowhere else.

* No bias (ViT, CvT) or a bias that needs no gradient: PyTorch's fused
  ``F.scaled_dot_product_attention``, the bias (and Swin's shift mask) as its additive
  ``attn_mask``. Inputs with more than one leading dim are folded to the 4-D shape the fused
  kernels take (:func:`scaled_dot_product_attention`); a CPU training call with fewer
  (batch, head) pairs than threads is split by queries (:func:`_attention_split_queries`).
* A bias that needs a gradient (Swin's relative position bias while training): the fused
  kernels return no gradient for ``attn_mask`` and PyTorch then takes its math path, which
  keeps every ``heads x N x N`` probability map for backward. Here the forward still runs the
  fused kernel, without autograd, and the backward recomputes the probabilities of one call
  (in float32, also under AMP) and returns the bias gradient (:class:`_BiasedAttention`).
  Exact in value and gradient.
* Dropout on the attention probabilities while training: the fused kernel's dropout, with the
  bias as an ``attn_mask`` (PyTorch's math path when the bias needs a gradient).
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              bias: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
              scale: Optional[float] = None, dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax(q k^T * scale + bias + mask) v`` (``... x heads x N x d`` inputs).

    ``bias`` (may need a gradient) and ``mask`` (may not) broadcast against the ``... x N x L``
    logits; ``scale`` defaults to ``d ** -0.5``. ``dropout_p`` is applied to the probabilities
    (pass 0 outside training)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if bias is None:
        return scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                            dropout_p=dropout_p)
    if dropout_p == 0 and torch.is_grad_enabled() and (q.requires_grad or bias.requires_grad):
        return _BiasedAttention.apply(q, k, v, bias, mask, scale)
    attn_mask = bias if mask is None else bias + mask
    return scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype), scale=scale,
                                        dropout_p=dropout_p)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 attn_mask: Optional[torch.Tensor] = None,
                                 scale: Optional[float] = None,
                                 dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax(q k^T * scale + attn_mask) v`` through PyTorch's fused kernels (the part of
    :func:`attention` without a bias gradient).

    Inputs may have more than one leading dim (Swin's ``B x nW x heads x N x d``). PyTorch's
    fused kernels take 4-D inputs only and send anything else to the math path (2-3x slower
    forward at Swin's windows on CPU, see the README), so such calls are folded to 4-D,
    whichever of two ways copies less: every leading dim into the batch (q/k/v stay views where
    their strides allow; a mask that varies over only some leading dims is expanded over the
    others), or the leading dims the mask varies over into the heads (the mask stays a view,
    q/k/v are copied). For Swin's SW-MSA (mask per window, shared by the batch) the first copies
    ``B x nW x heads x N x N`` mask values instead of three ``B x nW x heads x N x d`` tensors.
    A mask that requires grad also sends PyTorch to the math path, even where grad mode is off
    (inference, a custom autograd Function's forward); there it is detached.
    """
    if attn_mask is not None and attn_mask.requires_grad and not torch.is_grad_enabled():
        attn_mask = attn_mask.detach()
    if attn_mask is None and q.dim() == 4:
        groups = _split_queries(q, k, v)
        if groups > 1:  # a few long heads, training on CPU
            return _attention_split_queries(q, k, v, groups, scale, dropout_p)
    if q.dim() <= 4:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale,
                                              dropout_p=dropout_p)
    lead, (heads, N) = q.shape[:-3], q.shape[-3:-1]
    L, n = k.shape[-2], len(lead)
    split = n  # lead[:split] -> batch; lead[split:] join the heads
    if attn_mask is not None:
        mask = attn_mask
        while mask.dim() > 3 and mask.shape[0] == 1:
            mask = mask[0]
        mask = mask.expand(*mask.shape[:-3], heads, N, L)
        varies = n - (mask.dim() - 3)  # the mask has lead[varies:] (and broadcasts over the rest)
        if varies < 0 or tuple(mask.shape[:-3]) != tuple(lead[varies:]):
            mask, varies = mask.expand(*lead, heads, N, L), 0
        if 0 < varies < n:  # e.g. Swin's per-window mask, shared by the batch
            into_batch = math.prod(lead[:varies]) * mask.numel() + _copied(q, k, v, batch_dims=lead)
            into_heads = _copied(q, k, v, batch_dims=lead[:varies])
            split = varies if into_heads < into_batch else n
        if split < n:
            attn_mask = mask.reshape(1, -1, N, L)
        elif varies == n:  # one mask for every leading index
            attn_mask = mask.reshape(1, heads, N, L)
        else:
            attn_mask = mask.expand(*lead, heads, N, L).reshape(-1, heads, N, L)
    batch = math.prod(lead[:split])
    out = F.scaled_dot_product_attention(_fold(q, batch), _fold(k, batch), _fold(v, batch),
                                         attn_mask=attn_mask, scale=scale, dropout_p=dropout_p)
    return out.view(*lead, heads, N, v.shape[-1])


def _fold(t: torch.Tensor, batch: int) -> torch.Tensor:
    return t.reshape(batch, -1, t.shape[-2], t.shape[-1])


def _copied(*tensors: torch.Tensor, batch_dims) -> int:
    """Elements copied by folding ``tensors`` to a batch of ``prod(batch_dims)`` (0 for views)."""
    copied = 0
    for t in tensors:
        try:
            t.view(math.prod(batch_dims), -1, t.shape[-2], t.shape[-1])
        except RuntimeError:
            copied += t.numel()
    return copied



# --------------------------------------------------------------------------------------------
# PyTorch's fused CPU attention backward divides its work by (batch, head) pair: with fewer
# pairs than threads it leaves cores idle, and with a single pair and long sequences it is
# several times slower still (CvT's first stage has one head and 53,400 queries x 13,350 keys
# at 1333x800; the README gives the measured times). Queries attend independently of one another, so
# such a call is split into groups of queries that become extra heads over the same keys and
# values (copied per group, a quarter of the queries' size or less); autograd sums the keys'
# and values' gradients over the groups. Exact; the fused kernels run both ways.
SPLIT_QUERIES_MIN = 1 << 20  # queries x keys of a pair below which the call is left alone


def _split_queries(q, k, v) -> int:
    """Groups to split the queries of a training call into (1: none)."""
    pairs, threads = q.shape[0] * q.shape[1], torch.get_num_threads()
    if (q.device.type != 'cpu' or q.dim() != 4 or pairs >= threads
            or q.shape[-2] * k.shape[-2] < SPLIT_QUERIES_MIN or not torch.is_grad_enabled()
            or not (q.requires_grad or k.requires_grad or v.requires_grad)):
        return 1
    return max(2, -(-threads // pairs))


def _attention_split_queries(q, k, v, groups, scale, dropout_p):
    B, H, N, d = q.shape
    pad = -N % groups
    q = F.pad(q, (0, 0, 0, pad)) if pad else q
    q = q.reshape(B, H * groups, (N + pad) // groups, d)
    k = k.unsqueeze(2).expand(B, H, groups, *k.shape[-2:]).reshape(B, H * groups, -1, d)
    v = v.unsqueeze(2).expand(B, H, groups, *v.shape[-2:]).reshape(B, H * groups, -1,
                                                                   v.shape[-1])
    out = F.scaled_dot_product_attention(q, k, v, scale=scale, dropout_p=dropout_p)
    return out.view(B, H, N + pad, -1)[:, :, :N]


# --------------------------------------------------------------------------------------------
# A bias that needs a gradient: fused forward, probabilities recomputed in backward.
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
