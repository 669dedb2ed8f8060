import math
from typing import Optional

import torch
import torch.nn.functional as F


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 attn_mask: Optional[torch.Tensor] = None,
                                 scale: Optional[float] = None,
                                 dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax(q k^T * scale + attn_mask) v`` through PyTorch's fused kernels.

    One entry point for the three backbones, so that a backend choice lives in one place. An
    additive ``attn_mask`` carries relative position bias and the shifted-window mask.

    Inputs may have more than one leading dim (Swin's ``B x nW x heads x N x d``). PyTorch's
    fused kernels take 4-D inputs only and send anything else to the math path (2-3x slower
    forward at Swin's windows on CPU), so such calls are folded to 4-D: the leading dims the
    mask varies over join the heads, the others form the batch, and the mask becomes a
    ``1 x groups x N x L`` view (no per-batch copy of it). A mask that requires grad also sends
    PyTorch to the math path, even where grad mode is off (inference, a custom autograd
    Function's forward); there it is detached."""
    if attn_mask is not None and attn_mask.requires_grad and not torch.is_grad_enabled():
        attn_mask = attn_mask.detach()
    if q.dim() <= 4:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale,
                                              dropout_p=dropout_p)
    lead, (heads, N) = q.shape[:-3], q.shape[-3:-1]
    L = k.shape[-2]
    split = len(lead)  # lead[:split] -> batch, lead[split:] + heads -> groups
    if attn_mask is not None:
        mask = attn_mask
        while mask.dim() > 3 and mask.shape[0] == 1:
            mask = mask[0]
        split = len(lead) - (mask.dim() - 3)
        if split < 0 or tuple(mask.shape[:-3]) != tuple(lead[split:]):
            mask, split = attn_mask.expand(*lead, heads, N, L), 0
        attn_mask = mask.expand(*mask.shape[:-3], heads, N, L).reshape(1, -1, N, L)
    batch = math.prod(lead[:split])

    def fold(t):
        return t.reshape(batch, -1, t.shape[-2], t.shape[-1])

    out = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), attn_mask=attn_mask,
                                         scale=scale, dropout_p=dropout_p)
    return out.view(*lead, heads, N, v.shape[-1])
