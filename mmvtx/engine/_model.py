"""The model a hook works on, under the wrappers mmengine puts around it."""
from mmengine.model import BaseTTAModel, is_model_wrapper
from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The detector or segmentor inside ``runner.model``.

    mmengine wraps it in a model wrapper (DDP, FSDP, ``MMDistributedDataParallel``) when
    training distributed, and ``tools/test.py --tta`` puts a ``BaseTTAModel`` around it
    (which loads the checkpoint into the model it wraps). Both are taken off here.
    """
    if is_model_wrapper(model):
        model = model.module
    if isinstance(model, BaseTTAModel):
        model = model.module
    if is_model_wrapper(model):  # a TTA model that was itself wrapped
        model = model.module
    return model
