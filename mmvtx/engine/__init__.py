from .layer_decay import LayerDecayOptimWrapperConstructor
from .safe_load import allow_mmengine_checkpoints

allow_mmengine_checkpoints()

__all__ = ['allow_mmengine_checkpoints', 'LayerDecayOptimWrapperConstructor']
