"""LayerNorm that stays accurate under mixed precision.

PyTorch's CPU LayerNorm, given a bfloat16 input with float32 weights (what ``torch.autocast``
hands it: LayerNorm is not on CPU autocast's float32 list), accumulates the weight and bias
gradients in bfloat16: over 1536 rows of gradients in [0, 1] the bias gradient stops at 512
where the float32 sum is about 770 (torch 2.13; ``tests/models/backbones/test_autocast.py``).
The norms here compute in float32 whenever the input is half or bfloat16 and the weights are
float32 (mixed precision), as CUDA autocast does for LayerNorm, and return float32; a model cast
to bfloat16 as a whole (weights too) keeps PyTorch's own path."""
import torch
import torch.nn.functional as F
from torch import nn

_LOW = (torch.float16, torch.bfloat16)


def _mixed(x: torch.Tensor, weight) -> bool:
    return x.dtype in _LOW and (weight is None or weight.dtype == torch.float32)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters and state-dict keys), in float32 for half/bfloat16
    inputs with float32 weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _mixed(x, self.weight):
            x = x.float()
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class LayerNorm2d(LayerNorm):
    """LayerNorm over the channels of a ``B x C x H x W`` map (ViTDet's pyramid, ConvNeXt)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
