from .attention import scaled_dot_product_attention
from .drop_path import DropPath, drop_path_rates
from .linear import Linear
from .mlp import Mlp
from .padding import pad_hw

__all__ = ['scaled_dot_product_attention', 'DropPath', 'drop_path_rates', 'Linear', 'Mlp', 'pad_hw']
