from .checkpoint import (CheckpointMismatchError, ConvertedCheckpoint, load_backbone_checkpoint,
                         load_state_dict_file)

__all__ = ['CheckpointMismatchError', 'ConvertedCheckpoint', 'load_backbone_checkpoint',
           'load_state_dict_file']
