from .cvt import CvT
from .swin import SwinTransformer
from .vit import ViT

__all__ = ['SwinTransformer', 'ViT', 'CvT']
