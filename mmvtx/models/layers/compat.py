"""The PyTorch APIs mmvtx uses that are newer than its oldest supported torch (2.1, the torch
of mmcv 2.1.0's released wheels), each with its older equivalent:

- ``torch.compiler.is_compiling`` (torch 2.3): ``torch._dynamo.is_compiling`` before;
- ``torch.compiler.is_exporting`` (torch 2.5): no export-specific path before;
- ``torch.library.custom_op`` with ``register_fake`` (torch 2.4): before, the function stays a
  plain Python function, which ``torch.compile`` traces through (the compiled program is the
  same; only the first compile of a new size is slower);
- ``nn.Module.register_load_state_dict_pre_hook`` (torch 2.5): the private
  ``_register_load_state_dict_pre_hook(hook, with_module=True)`` before, which calls the hook
  with the same arguments.

Where torch has the API, the name here is torch's own function (no wrapper for ``torch.compile``
to trace)."""
from typing import Callable

import torch
from torch import nn


def _not_compiling() -> bool:
    return False


def _resolve_is_compiling() -> Callable[[], bool]:
    fn = getattr(getattr(torch, 'compiler', None), 'is_compiling', None)
    if fn is None:
        fn = getattr(getattr(torch, '_dynamo', None), 'is_compiling', None)
    return fn if fn is not None else _not_compiling


is_compiling = _resolve_is_compiling()
is_exporting = getattr(getattr(torch, 'compiler', None), 'is_exporting', None) or _not_compiling


class _PlainOp:
    """Stands in for a ``torch.library.custom_op`` where torch has none: calls the function
    itself; ``register_fake`` registers nothing."""

    def __init__(self, fn: Callable):
        self._fn = fn
        self.__name__ = getattr(fn, '__name__', 'op')
        self.__doc__ = getattr(fn, '__doc__', None)

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def register_fake(self, fn: Callable) -> Callable:
        return fn


def custom_op(name: str, mutates_args=()) -> Callable[[Callable], Callable]:
    """``torch.library.custom_op(name, mutates_args=...)``, or a plain function before 2.4."""
    op = getattr(getattr(torch, 'library', None), 'custom_op', None)
    if op is not None:
        return op(name, mutates_args=mutates_args)
    return _PlainOp


def register_load_state_dict_pre_hook(module: nn.Module, hook: Callable):
    """``module.register_load_state_dict_pre_hook(hook)``: ``hook(module, state_dict, prefix,
    local_metadata, strict, missing_keys, unexpected_keys, error_msgs)`` before ``module``'s
    own tensors are loaded."""
    public = getattr(module, 'register_load_state_dict_pre_hook', None)
    if public is not None:
        return public(hook)
    return module._register_load_state_dict_pre_hook(hook, with_module=True)
