from .layer_decay import LayerDecayOptimWrapperConstructor
from .safe_load import SafeCheckpointLoadHook, allow_mmengine_checkpoints

__all__ = ['allow_mmengine_checkpoints', 'LayerDecayOptimWrapperConstructor',
           'SafeCheckpointLoadHook']
