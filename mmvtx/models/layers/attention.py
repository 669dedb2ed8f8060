"""Attention for the three backbones: every softmax(QK^T)V goes through :func:`attention`, so
the choice of kernel lives here and nowhere else.

* No bias (ViT, CvT) or a bias that needs no gradient: PyTorch's fused
  ``F.scaled_dot_product_attention``, the bias (and Swin's shift mask) as its additive
  ``attn_mask``. Inputs with more than one leading dim are folded to the 4-D shape the fused
  kernels take (:func:`scaled_dot_product_attention`); a CPU training call with fewer
  (batch, head) pairs than threads is split by queries (:func:`_attention_split_queries`).
* A bias that needs a gradient (Swin's relative position bias while training), chosen by
  :func:`bias_grad_kernel`:

  - ``'recompute'`` (CPU): PyTorch's fused CPU kernel returns no gradient for ``attn_mask``
    and PyTorch then takes its math path, which keeps every ``heads x N x N`` probability map
    for backward. Here the forward still runs the fused kernel, without autograd, and the
    backward recomputes the probabilities of one call (in float32, also under AMP) and returns
    the bias gradient (:class:`_BiasedAttention`). Exact in value and gradient.
  - ``'sdpa'`` (CUDA): the bias (plus the shift mask) goes to ``F.scaled_dot_product_attention``
    as an ``attn_mask`` that requires grad; on CUDA PyTorch's memory-efficient kernel takes it
    and returns its gradient from its own fused backward (on CPU the same call takes the math
    path: that is how the route is tested here). ViTDet's decomposed term takes the same
    route expanded to its ``... x heads x N x L`` mask (autograd sums the mask's gradient back
    to rows and columns) where that mask has at most ``SDPA_REL_POS_LOGITS`` elements (the
    windowed blocks); a call above it (global blocks at detection sizes: 12 x 4096 x 4096 per
    image at 1024 px) stays on ``'recompute'``, which never holds more than a block of queries'
    logits.
* Dropout on the attention probabilities while training: the fused kernel's dropout, with the
  bias as an ``attn_mask`` (PyTorch's math path when the bias needs a gradient).
* Under ``torch.jit`` tracing (mmengine's FLOP counter, as mmdet's/mmseg's ``get_flops.py``
  call it; ``torch.jit.trace``; ONNX export): ``softmax(q k^T * scale + terms) v`` as two
  matmuls (:func:`_traced_attention`), which the tracer records and the counter counts (it
  counts neither the fused kernel nor a custom autograd Function, :mod:`.tracing`).
"""
import math
import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .compat import is_compiling
from .tracing import tracing


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              bias: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
              scale: Optional[float] = None, dropout_p: float = 0.0,
              rel_pos: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """``softmax(q k^T * scale + bias + mask + rel_pos) v`` (``... x heads x N x d`` inputs).

    ``bias`` (may need a gradient) and ``mask`` (may not) broadcast against the ``... x N x L``
    logits; ``scale`` defaults to ``d ** -0.5``. ``rel_pos = (rel_h, rel_w)`` is a decomposed
    relative position term (ViTDet, after MViTv2): ``... x N x kh`` and ``... x N x kw`` for
    keys on a ``kh x kw`` grid, adding ``rel_h[n, i] + rel_w[n, j]`` to the logit of query ``n``
    and key ``(i, j)``; it is expanded to ``N x L`` only a block of queries at a time, and its
    gradient is the row/column sum of the logits' gradient. ``dropout_p`` is applied to the
    probabilities (pass 0 outside training)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if q.numel() == 0 and not is_compiling():  # e.g. a batch of no images
        return (q.sum(-1, keepdim=True) + k.sum() + v.sum()).expand(*q.shape[:-1], v.shape[-1])
    if _RECORDERS:  # analysis tools: also keep the probabilities (outputs unchanged)
        _RECORDERS[-1].add(q, k, bias, mask, scale, rel_pos)
    if tracing():
        return _traced_attention(q, k, v, bias, mask, scale, dropout_p, rel_pos)
    if bias is None and rel_pos is None:
        return scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                            dropout_p=dropout_p)
    rel_h, rel_w = rel_pos if rel_pos is not None else (None, None)
    needs_grad = q.requires_grad or k.requires_grad or v.requires_grad or any(
        t is not None and t.requires_grad for t in (bias, rel_h, rel_w))
    if dropout_p == 0 and torch.is_grad_enabled() and needs_grad:
        if bias_grad_kernel(q) == 'sdpa' and (rel_pos is None or _rel_pos_fits(q, k)):
            attn_mask = _logit_terms(bias, rel_h, rel_w, mask, q.shape[-2], None)
            return scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype),
                                                scale=scale, dropout_p=0.0)
        return _BiasedAttention.apply(q, k, v, bias, rel_h, rel_w, mask, scale)
    if dropout_p == 0:  # no gradient: the fused kernel a block of queries at a time
        return _biased_forward(q, k, v, bias, rel_h, rel_w, mask, scale)
    attn_mask = _logit_terms(bias, rel_h, rel_w, mask, q.shape[-2], None)
    return scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype), scale=scale,
                                        dropout_p=dropout_p)


def _traced_attention(q, k, v, bias, mask, scale, dropout_p, rel_pos):
    """:func:`attention` as plain operators, for ``torch.jit``'s tracer (:mod:`.tracing`):
    the logits in at least float32, as the fused kernels accumulate them."""
    rel_h, rel_w = rel_pos if rel_pos is not None else (None, None)
    logits = torch.matmul(q * scale, k.transpose(-2, -1))
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    terms = _logit_terms(bias, rel_h, rel_w, mask, q.shape[-2], None)
    if terms is not None:
        logits = logits + terms
    probs = logits.softmax(-1).to(v.dtype)
    if dropout_p:
        probs = F.dropout(probs, dropout_p)
    return torch.matmul(probs, v)


_RECORDERS: list = []


class AttentionRecorder:
    """While active (``with AttentionRecorder() as rec:``), every :func:`attention` call also
    stores its probabilities ``softmax(q k^T * scale + bias + mask + rel_pos)`` (float32, on
    the CPU, ``... x heads x N x L``) in ``rec.calls`` as ``(rec.context, probs)``; whoever
    drives the recorder sets ``context`` (e.g. from a forward pre-hook naming the module) before
    each call. For analysis tools: the computation and outputs of the model are unchanged."""

    def __init__(self):
        self.calls = []
        self.context = None

    def __enter__(self):
        _RECORDERS.append(self)
        return self

    def __exit__(self, *exc):
        _RECORDERS.remove(self)

    def add(self, q, k, bias, mask, scale, rel_pos):
        with torch.no_grad():
            logits = torch.matmul(q.float() * scale, k.float().transpose(-2, -1))
            rel_h, rel_w = rel_pos if rel_pos is not None else (None, None)
            terms = _logit_terms(bias, rel_h, rel_w, mask, q.shape[-2], None)
            if terms is not None:
                logits = logits + terms.float()
            self.calls.append((self.context, logits.softmax(-1).cpu()))


BIAS_GRAD_KERNELS = ('auto', 'sdpa', 'recompute')


def bias_grad_kernel(q: torch.Tensor) -> str:
    """How a bias that needs a gradient is trained: ``MMVTX_BIAS_GRAD`` (``'sdpa'``,
    ``'recompute'``, default ``'auto'``: ``'sdpa'`` on CUDA, ``'recompute'`` elsewhere); see
    the module's docstring. Read at every call, so a benchmark can compare the two."""
    choice = os.environ.get('MMVTX_BIAS_GRAD', 'auto')
    if choice not in BIAS_GRAD_KERNELS:
        raise ValueError(f'MMVTX_BIAS_GRAD={choice!r}: expected one of {BIAS_GRAD_KERNELS}')
    if choice == 'auto':
        return 'sdpa' if q.device.type == 'cuda' else 'recompute'
    return choice


# The largest decomposed relative position term (``... x heads x N x L`` elements) expanded to
# an ``attn_mask`` with a gradient under ``MMVTX_BIAS_GRAD=sdpa``; larger calls recompute.
SDPA_REL_POS_LOGITS = 1 << 26  # ViTDet-B windowed blocks, 4 images of 1024 px: 46M


def _rel_pos_fits(q: torch.Tensor, k: torch.Tensor) -> bool:
    return q[..., :1].numel() * k.shape[-2] <= SDPA_REL_POS_LOGITS


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


def _mergeable(t: torch.Tensor, start: int, end: int) -> bool:
    """Whether dims ``[start, end)`` of ``t`` can be merged into one by ``view`` (PyTorch's
    rule: each dim's stride is the next one's stride times its size; size-1 dims aside). Read
    from the strides, not by trying the view, so that ``torch.compile`` can trace it."""
    dims = [d for d in range(start, end) if t.shape[d] != 1]
    return all(t.stride(a) == t.stride(b) * t.shape[b] for a, b in zip(dims, dims[1:]))


def _copied(*tensors: torch.Tensor, batch_dims) -> int:
    """Elements copied by folding ``tensors`` (``*lead x heads x N x d``) to a batch of
    ``prod(batch_dims)`` (the leading ``len(batch_dims)`` dims; 0 for views)."""
    n = len(batch_dims)
    return sum(t.numel() for t in tensors
               if not (_mergeable(t, 0, n) and _mergeable(t, n, t.dim() - 2)))


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
    """Groups to split the queries of a training call into (1: none; always under
    ``torch.compile``, whose generated kernels are not PyTorch's eager backward)."""
    if is_compiling() or q.device.type != 'cpu':
        return 1
    pairs, threads = q.shape[0] * q.shape[1], torch.get_num_threads()
    if (q.dim() != 4 or pairs >= threads
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
# A bias that needs a gradient: fused forward, probabilities recomputed in backward, both a block
# of queries at a time so that no more than BLOCK_LOGITS logits exist at once (ViTDet's global
# blocks at 1024 px have 12 x 4096 x 4096 of them per image).
BLOCK_LOGITS = 1 << 25


def _query_blocks(q: torch.Tensor, L: int):
    """Slices of the query dim so that each block has at most BLOCK_LOGITS logits (one block
    while compiling: the block count would be a guard on the input size, and inductor plans
    the memory of the graph itself)."""
    N = q.shape[-2]
    if is_compiling():
        return [slice(0, N)]
    per_row = max(1, q[..., :1, :1].numel() * L)
    rows = max(1, min(N, BLOCK_LOGITS // per_row))
    return [slice(i, min(N, i + rows)) for i in range(0, N, rows)]


def _rows(t: Optional[torch.Tensor], rows: Optional[slice], N: int):
    """The query rows ``rows`` of a logit term (one that broadcasts over queries is kept)."""
    if t is None or rows is None or t.dim() < 2 or t.shape[-2] != N:
        return t
    return t[..., rows, :]


def _logit_terms(bias, rel_h, rel_w, mask, N: int, rows: Optional[slice]) -> torch.Tensor:
    """``bias + rel_pos + mask`` for the query rows ``rows`` (None: all), at least float32."""
    out = None
    if rel_h is not None:
        rh, rw = _rows(rel_h, rows, N), _rows(rel_w, rows, N)
        dtype = torch.promote_types(rh.dtype, torch.float32)
        out = (rh.to(dtype).unsqueeze(-1) + rw.to(dtype).unsqueeze(-2)).flatten(-2)
    for t in (bias, mask):
        t = _rows(t, rows, N)
        if t is not None:
            out = t if out is None else out + t
    return out


def _biased_forward(q, k, v, bias, rel_h, rel_w, mask, scale):
    N, L = q.shape[-2], k.shape[-2]
    blocks = _query_blocks(q, L)
    outs = []
    for rows in blocks:
        attn_mask = _logit_terms(bias, rel_h, rel_w, mask, N, rows if len(blocks) > 1 else None)
        qr = q[..., rows, :] if len(blocks) > 1 else q
        # dropout_p given, not left to its default: torch.compile(dynamic=True) makes a float
        # default a graph input, and the second autograd.Function (block) that read it
        # failed (a dynamo assertion, 'lift_tracked_freevar_to_input ... root SubgraphTracer')
        outs.append(scaled_dot_product_attention(qr, k, v, attn_mask=attn_mask.to(q.dtype),
                                                 scale=scale, dropout_p=0.0))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-2)


def _sum_to(grad: torch.Tensor, shape) -> torch.Tensor:
    """``grad`` summed over the dims a tensor of ``shape`` was broadcast along."""
    lead = grad.dim() - len(shape)
    if lead:
        grad = grad.sum(dim=tuple(range(lead)))
    dims = tuple(d for d, n in enumerate(shape) if n == 1 and grad.shape[d] != 1)
    return grad.sum(dim=dims, keepdim=True) if dims else grad


class _BiasedAttention(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q, k, v, bias, rel_h, rel_w, mask, scale):
        with torch.no_grad():
            out = _biased_forward(q, k, v, bias, rel_h, rel_w, mask, scale)
        ctx.save_for_backward(q, k, v, bias, rel_h, rel_w, mask)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, rel_h, rel_w, mask = ctx.saved_tensors
        scale, need = ctx.scale, ctx.needs_input_grad
        N, L = q.shape[-2], k.shape[-2]
        grad_out = grad_out.to(q.dtype)
        grad_q = torch.empty_like(q) if need[0] else None
        grad_k = torch.zeros_like(k) if need[1] else None
        grad_v = torch.zeros_like(v) if need[2] else None
        grad_bias = None
        grad_rh = torch.empty_like(rel_h) if need[4] else None
        grad_rw = torch.empty_like(rel_w) if need[5] else None
        blocks = _query_blocks(q, L)
        for rows in blocks:
            one = len(blocks) == 1
            qr = q if one else q[..., rows, :]
            gor = grad_out if one else grad_out[..., rows, :]
            # probabilities and their gradient in float32, GEMMs in the inputs' dtype (AMP)
            logits = torch.matmul(qr * scale, k.transpose(-2, -1))
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            logits += _logit_terms(bias, rel_h, rel_w, mask, N, None if one else rows)
            p32 = logits.softmax(dim=-1)
            del logits
            p = p32.to(q.dtype)
            if grad_v is not None:
                grad_v += _sum_to(torch.matmul(p.transpose(-2, -1), gor), v.shape)
            del p
            grad_p = torch.matmul(gor, v.transpose(-2, -1)).to(p32.dtype)
            # softmax backward, fused: dS = P * (dP - sum(dP * P))
            grad_s32 = torch.ops.aten._softmax_backward_data(grad_p, p32, -1, p32.dtype)
            del p32, grad_p
            grad_s = grad_s32.to(q.dtype)
            if grad_q is not None:
                grad_q[..., rows, :] = torch.matmul(grad_s, k) * scale
            if grad_k is not None:
                grad_k += _sum_to(torch.matmul(grad_s.transpose(-2, -1), qr * scale), k.shape)
            del grad_s
            if need[3]:
                g = _sum_to(grad_s32, bias.shape)
                if bias.shape[-2] == N and not one:
                    if grad_bias is None:
                        grad_bias = torch.zeros(bias.shape, dtype=g.dtype, device=g.device)
                    grad_bias[..., rows, :] = g
                else:
                    grad_bias = g if grad_bias is None else grad_bias + g
            if grad_rh is not None or grad_rw is not None:
                g = grad_s32.unflatten(-1, (rel_h.shape[-1], rel_w.shape[-1]))
                if grad_rh is not None:
                    grad_rh[..., rows, :] = g.sum(-1)
                if grad_rw is not None:
                    grad_rw[..., rows, :] = g.sum(-2)
            del grad_s32
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_q, grad_k, grad_v, grad_bias, grad_rh, grad_rw, None, None
