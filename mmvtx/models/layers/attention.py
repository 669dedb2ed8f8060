from typing import Optional

import torch
import torch.nn.functional as F


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 attn_mask: Optional[torch.Tensor] = None,
                                 scale: Optional[float] = None,
                                 dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax(q k^T * scale + attn_mask) v`` through PyTorch's fused kernels.

    One entry point for the three backbones, so that a backend choice lives in one place. An
    additive ``attn_mask`` carries relative position bias and the shifted-window mask."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale,
                                          dropout_p=dropout_p)
