from torch import nn
from torch.nn.init import trunc_normal_

__all__ = ['trunc_normal_', 'init_transformer_weights']


def init_transformer_weights(module: nn.Module, std: float = 0.02):
    """The transformer papers' init: truncated normal Linear weights, zero biases, unit norms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
