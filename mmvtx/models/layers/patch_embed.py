import torch
from torch import nn

from .norm import LayerNorm
from .padding import pad_hw


class PatchEmbed(nn.Module):
    """Image -> patch tokens (ViT's patch embedding, Swin's patch partition + linear embedding):
    a ``p x p`` convolution with stride ``p`` on the input padded bottom/right to a multiple of
    ``p``, then LayerNorm over channels if ``norm`` (Swin). Returns ``B x H/p x W/p x C``
    (channels-last)."""

    def __init__(self, in_channels: int = 3, embed_dim: int = 768, patch_size: int = 16,
                 norm: bool = False):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.norm = LayerNorm(embed_dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(pad_hw(x, self.patch_size))
        return self.norm(x.permute(0, 2, 3, 1))


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """An RGB patch embedding (``O x 3 x k x k``) for an input of ``in_channels`` channels, as
    timm adapts its pretrained stems: one channel takes the sum over R, G, B (a grey image gives
    the response of the same grey in RGB); other counts cycle R, G, B over the channels, scaled
    by ``3 / in_channels`` to keep the response's scale (an image repeated over a multiple of 3
    channels gives exactly its RGB response). Computed and returned in float32."""
    w = weight.float()
    if in_channels == 1:
        return w.sum(1, keepdim=True)
    idx = torch.arange(in_channels) % w.shape[1]
    return w[:, idx] * (w.shape[1] / in_channels)
