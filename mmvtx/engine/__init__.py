from .checkpoint_fit import (CheckpointFitHook, ConvertCheckpointHook, checkpoint_mismatches,
                             convert_backbone_keys)
from .compile import CompileModelHook, compile_hook_cfg
from .layer_decay import LayerDecayOptimWrapperConstructor
from .model_fit import BackboneFitHook, backbone_fit_errors
from .reliability import (AtomicLocalBackend, ExactResumeHook, NonFiniteCheckHook,
                          ResumeScheduleHook, ResumeValidationHook, find_resume_checkpoint)
from .safe_load import SafeCheckpointLoadHook, allow_mmengine_checkpoints
from .visualization import DetShowDirHook, SegShowDirHook

__all__ = ['allow_mmengine_checkpoints', 'AtomicLocalBackend', 'BackboneFitHook',
           'backbone_fit_errors', 'CheckpointFitHook',
           'checkpoint_mismatches', 'CompileModelHook', 'ConvertCheckpointHook',
           'convert_backbone_keys',
           'compile_hook_cfg', 'ExactResumeHook',
           'find_resume_checkpoint', 'LayerDecayOptimWrapperConstructor', 'NonFiniteCheckHook',
           'ResumeScheduleHook', 'ResumeValidationHook',
           'SafeCheckpointLoadHook', 'SegShowDirHook', 'DetShowDirHook']
