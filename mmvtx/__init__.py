"""mmvtx: ViT, Swin Transformer and CvT as multi-scale backbones for mmdetection and
mmsegmentation. Importing it registers everything under the ``mmvtx`` scope."""
from .version import __version__
from . import datasets, engine, models  # noqa: F401,E402  (registers everything)

__all__ = ['__version__']
