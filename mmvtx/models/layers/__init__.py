from .attention import attention, scaled_dot_product_attention
from .drop_path import DropPath, drop_path_rates
from .linear import Linear
from .mlp import Activation, LayerScale, Mlp, SwiGLU
from .padding import pad_hw
from .patch_embed import PatchEmbed

__all__ = ['attention', 'scaled_dot_product_attention', 'DropPath', 'drop_path_rates', 'Linear',
           'Activation', 'LayerScale', 'Mlp', 'SwiGLU', 'pad_hw', 'PatchEmbed']
