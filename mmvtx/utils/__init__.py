from .checkpoint import (CheckpointMismatchError, ConvertedCheckpoint, init_backbone_weights,
                         load_backbone_checkpoint, load_state_dict_file)

__all__ = ['CheckpointMismatchError', 'ConvertedCheckpoint', 'init_backbone_weights',
           'load_backbone_checkpoint', 'load_state_dict_file']
