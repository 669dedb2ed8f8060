"""``torch.compile`` for the parts of a detector or segmentor that trace as one graph.

mmengine's own switch (``compile=True`` in a config) compiles the whole ``train_step``: data
preprocessing, the backbone, and the heads, whose Python-side box and mask bookkeeping and mmcv's
custom ops (RoIAlign, NMS) break the graph many times. mmvtx's backbones trace as one graph each
(tested: ``tests/models/layers/test_attention.py``), so :class:`CompileModelHook` compiles
the named submodules (default: the backbone) in place, with ``nn.Module.compile``: parameter
names, checkpoints and ``--resume`` stay as without compiling.

Changing input sizes (detection batches are padded per batch to different sizes): with
``dynamic=None`` (the default, PyTorch's "automatic dynamic") the first size compiles a static
graph, the first change of size recompiles once with symbolic sizes, and later sizes reuse
it (``dynamic=True``: the symbolic graph from the start); also where a Swin stage goes from
several windows to one or back, and at a ViT's pretraining patch grid. PyTorch itself
specialises maps of a single cell per side: inputs below 33 px on a side (stride-32 levels of
one cell) compile a graph of their own. ``tools/train.py CONFIG --compile [BACKEND]`` adds
the hook.
"""
import logging
from typing import Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmvtx.engine._model import unwrap_model
from mmvtx.registry import HOOKS


@HOOKS.register_module()
class CompileModelHook(Hook):
    """Compiles ``modules`` of the model (dotted names, e.g. ``'backbone'``, ``'neck'``) with
    ``torch.compile(backend=..., mode=..., dynamic=...)`` before the run starts.

    Args:
        modules: submodules to compile; a name that the model does not have is an error.
        backend: ``torch.compile``'s backend (``'inductor'``; ``'aot_eager'`` traces without
            generating code, for checking a model).
        mode: inductor's mode (``None``, ``'max-autotune'``, ...).
        dynamic: ``None`` (automatic: recompile once with symbolic sizes when the size first
            changes), ``True`` (symbolic from the start) or ``False`` (one graph per size).
    """
    priority = 'VERY_LOW'  # after every hook that may replace or wrap modules

    def __init__(self, modules: Sequence[str] = ('backbone', ), backend: str = 'inductor',
                 mode: Optional[str] = None, dynamic: Optional[bool] = None):
        if isinstance(modules, str):
            modules = (modules, )
        if not modules:
            raise ValueError('CompileModelHook: modules is empty; name what to compile, e.g. '
                             "modules=('backbone',)")
        self.modules = tuple(modules)
        self.kwargs = dict(backend=backend, mode=mode, dynamic=dynamic)

    def before_run(self, runner) -> None:
        model = unwrap_model(runner.model)
        for name in self.modules:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                children = [n for n, _ in model.named_children()]
                raise ValueError(f'CompileModelHook: the model ({type(model).__name__}) has no '
                                 f'submodule {name!r}; its children: {children}') from None
            module.compile(**self.kwargs)
            print_log(f'torch.compile({name}: {type(module).__name__}, '
                      f'{", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())})',
                      logger='current', level=logging.INFO)


def compile_hook_cfg(backend: str = 'inductor') -> dict:
    """The hook ``--compile [BACKEND]`` adds: the backbone, automatic dynamic sizes."""
    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise ValueError(f'--compile {backend!r}: not a torch.compile backend; available: '
                         f'{sorted(torch._dynamo.list_backends(exclude_tags=()))}')
    return dict(type='mmvtx.CompileModelHook', modules=('backbone', ), backend=backend)
