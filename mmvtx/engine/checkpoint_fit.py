"""Evaluate only the model a checkpoint was trained for, and read other codebases' whole
checkpoints.

A detector or segmentor checkpoint of mmdet's/mmseg's model zoo (Mask R-CNN Swin-T, UPerNet
Swin-B, ...) names its backbone's tensors in that codebase's layout (``attn.w_msa.qkv``,
``ffn.layers.0.0``), and its neck and heads as our recipes do. mmengine loads ``load_from`` with
``strict=False``: the backbone's tensors were skipped as unexpected (a fine-tuning run kept the
ImageNet backbone without a word) and ``tools/test.py`` refused the file.
:class:`ConvertCheckpointHook` (which the tools add to every run) converts the ``backbone.*``
part of such a checkpoint to mmvtx's names with the backbone's own converter before mmengine
loads it, so the released detector is evaluated or fine-tuned as it was trained (Swin's shift
rule follows the checkpoint's codebase, as for ``init_cfg``).

mmengine loads ``load_from`` with ``strict=False``: a checkpoint of another model (a ViT
detector's file given to a Swin config, a backbone-only file) loads what happens to match,
logs a long warning and is evaluated anyway, so wrong metrics come out with exit status 0.
:class:`CheckpointFitHook` (which ``tools/test.py`` and the demo add when they evaluate a
checkpoint) refuses such a file before any weight is copied, naming its missing, unexpected and
mis-shaped keys.

Allowed differences, all of which the model fills in itself:

* the int8 buffers of checkpoint-chosen settings (a backbone's ``_settings``: Swin's
  ``shift_rule``, CvT's and ViT's ``mlp_act``) may be missing: checkpoints written before
  they existed lack them, and a checkpoint without the record leaves the setting as built;
* BatchNorm's ``num_batches_tracked`` may be missing (torch fills it in on load).

Any other missing parameter or buffer would keep its random init, so it is refused.
"""
import logging
import re
from typing import Dict, List, Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from torch import nn

from mmvtx.engine._model import unwrap_model
from mmvtx.registry import HOOKS
from mmvtx.utils.checkpoint import CheckpointMismatchError, mismatch_lines


def _state_dict(checkpoint: dict) -> dict:
    """The weights of an mmengine checkpoint as ``_load_checkpoint_to_model`` takes them."""
    return checkpoint['state_dict'] if isinstance(checkpoint.get('state_dict'), dict) \
        else checkpoint


def _backbones(model: nn.Module):
    """``(name, module)`` of the mmvtx backbones of ``model`` (not those nested in another)."""
    from mmvtx.models.backbones.base import VisionBackbone
    found = []
    for name, module in model.named_modules():
        if isinstance(module, VisionBackbone) and not any(
                name.startswith(f + '.') for f, _ in found):
            found.append((name, module))
    return found


def convert_backbone_keys(model: nn.Module, state_dict: Dict,
                          resized: Optional[Dict[str, tuple]] = None,
                          unknown: Optional[List[str]] = None) -> List[str]:
    """Converts, in place, the part of a whole-model ``state_dict`` that belongs to each mmvtx
    backbone of ``model`` (``backbone.*``) from another codebase's layout to mmvtx's names.
    Parts already in mmvtx's names, and layouts the backbone does not know, are left as they
    are (the fit check then names what does not fit). Tables of another window or grid size are
    resampled to the model's (fine-tuning from a file of another window size); ``resized``, if
    given, receives their keys and the file's shapes, so that :class:`CheckpointFitHook` refuses
    to evaluate such a file as it refuses an mmvtx file of another config. ``unknown``, if
    given, receives a line per part in a layout the backbone does not know. Returns one line per
    converted part."""
    done = []
    for name, backbone in _backbones(model):
        if not name:  # a bare backbone: its own loading (init_cfg) converts
            continue
        for prefix in (f'{name}.', f'module.{name}.'):  # mmengine strips DataParallel's module.
            keys = [k for k in state_dict if k.startswith(prefix)]
            if keys:
                break
        else:
            continue
        line = backbone.convert_keys_under(state_dict, prefix, resized, unknown)
        if line:
            done.append(line)
    return done


@HOOKS.register_module()
class ConvertCheckpointHook(Hook):
    """Converts the backbone part of a whole detector/segmentor checkpoint written by another
    codebase (mmdet's/mmseg's released Swin models) to mmvtx's names in
    ``after_load_checkpoint``, before mmengine copies the weights and before
    :class:`CheckpointFitHook` checks them (see the module's docstring). ``tools/train.py``,
    ``tools/test.py`` and the demo add it; mmvtx's own checkpoints pass unchanged."""
    priority = 'HIGHEST'

    def __init__(self):
        # of the checkpoint last seen: the keys of resampled tables -> the file's shapes, and
        # what was converted or not known (for CheckpointFitHook's error)
        self.resized, self.notes = {}, []

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = unwrap_model(runner.model)
        source = getattr(runner, '_load_from', None) or 'the checkpoint'
        self.resized, unknown = {}, []
        done = convert_backbone_keys(model, _state_dict(checkpoint), self.resized, unknown)
        for line in done:
            print_log(f'{source}: {line}', logger='current')
        self.notes = [f'  {line} (the keys above are named as mmvtx names them)'
                      for line in done] + [f'  {line}' for line in unknown]


def _may_miss(model: nn.Module) -> set:
    """The model's keys that a checkpoint may lack (see the module's docstring)."""
    keys = set()
    for prefix, module in model.named_modules():
        for name in module.__dict__.get('_settings', {}):
            keys.add(f'{prefix}.{name}' if prefix else name)
    return keys | {k for k in model.state_dict() if k.endswith('.num_batches_tracked')}


def checkpoint_mismatches(model: nn.Module, state_dict: Dict,
                          file_shapes: Optional[Dict[str, tuple]] = None) -> List[str]:
    """One line per kind of difference (missing keys, unexpected keys, shape mismatches)
    between ``state_dict`` and ``model``; empty if the checkpoint fits. ``file_shapes``: the
    shapes the file had where the conversion resampled a tensor."""
    own = model.state_dict()
    may_miss = _may_miss(model)
    file_shapes = file_shapes or {}
    missing = [k for k in own if k not in state_dict and k not in may_miss]
    unexpected = [k for k in state_dict if k not in own]
    shapes = {k: file_shapes.get(k, tuple(getattr(v, 'shape', ())))
              for k, v in state_dict.items()}
    mis_shaped = [f'{k}: checkpoint {shapes[k]} vs model {tuple(own[k].shape)}'
                  for k in state_dict if k in own and shapes[k] != tuple(own[k].shape)]
    return mismatch_lines(missing, unexpected, mis_shaped)


def _fitting(model: nn.Module, state_dict: Dict, own: Optional[Dict] = None) -> int:
    """How many tensors of ``state_dict`` the model takes (same name, same shape); ``own``: the
    model's state dict, where the caller has it already."""
    own = model.state_dict() if own is None else own
    return sum(1 for k, v in state_dict.items()
               if k in own and tuple(getattr(v, 'shape', ())) == tuple(own[k].shape))


def learnt_classes(checkpoint: dict):
    """The class names of the dataset a checkpoint was trained on, as mmengine saves them
    (``meta['dataset_meta']``; ``meta['CLASSES']`` in mmdet 2.x / mmseg 0.x files), or None."""
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
    dataset_meta = meta.get('dataset_meta') if isinstance(meta.get('dataset_meta'), dict) else {}
    classes = dataset_meta.get('thing_classes', dataset_meta.get('classes'))
    return meta.get('CLASSES') if classes is None else classes


def _evaluated_dataset(runner):
    """``(config key, dataset)`` of the loop the run evaluates with (test, else val), or
    ``(None, None)`` where neither is built."""
    from mmengine.runner import BaseLoop
    for key in ('test', 'val'):
        loop = getattr(runner, f'_{key}_loop', None)
        if isinstance(loop, BaseLoop) and hasattr(loop, 'dataloader'):
            return f'{key}_dataloader.dataset', loop.dataloader.dataset
    return None, None


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Raises :class:`~mmvtx.utils.checkpoint.CheckpointMismatchError` in
    ``after_load_checkpoint`` (before mmengine copies the weights) when the checkpoint's keys or
    shapes do not fit the model, naming the file and every missing, unexpected and mis-shaped
    key. Add it to runs that evaluate a given checkpoint; not to fine-tuning from another
    model's weights (``load_from`` of a detector with other classes), where differences are
    expected. ``action='resumed'`` (what ``tools/train.py --resume`` adds): mmengine resumes
    with ``strict=False`` too, and a changed model went on to fail in the optimizer's first step
    (or, where only names changed, trained on from random weights). ``action='fine-tuned'``
    (what ``tools/train.py`` adds for a ``load_from`` it does not resume): differences are
    expected, but a file of which no tensor fits (a backbone's alone, saved without its
    ``backbone.``) loaded nothing and the run trained from the initial weights."""
    priority = 'VERY_HIGH'
    ACTIONS = ('evaluated', 'resumed', 'fine-tuned')

    def __init__(self, action: str = 'evaluated'):
        if action not in self.ACTIONS:
            raise ValueError(f'CheckpointFitHook: action={action!r} must be one of '
                             f'{self.ACTIONS}')
        self.action = action

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = unwrap_model(runner.model)
        state_dict = _state_dict(checkpoint)
        # the renaming mmengine applies before loading (Runner.load_checkpoint's revise_keys)
        state_dict = {re.sub(r'^module\.', '', k): v for k, v in state_dict.items()}
        # tables the conversion resampled to the model's window: the file has another config
        converters = [h for h in getattr(runner, 'hooks', ())
                      if isinstance(h, ConvertCheckpointHook)]
        file_shapes = {re.sub(r'^module\.', '', k): v for h in converters
                       for k, v in h.resized.items()}
        lines = checkpoint_mismatches(model, state_dict, file_shapes)
        source = getattr(runner, '_load_from', None) or 'the checkpoint'
        fitting = _fitting(model, state_dict) if lines and self.action == 'fine-tuned' else 0
        if fitting:  # another model's heads or classes: mmengine loads what fits
            print_log(f'{source}: {fitting} of {len(state_dict)} tensors fit the model and are '
                      'loaded (fine-tuning; mmengine names the others)', logger='current')
            # another backbone's detector: its neck and heads load, the backbone takes nothing
            # and keeps its init_cfg (or random) weights; say so, not only in mmengine's list
            own = model.state_dict()
            for name, backbone in _backbones(model):
                prefix = f'{name}.' if name else ''
                keys = [k for k in own if k.startswith(prefix)]
                if keys and not _fitting(model, {k: state_dict[k] for k in keys
                                                 if k in state_dict}, own):
                    print_log(f'{source}: none of its tensors fits model.{name or "backbone"} '
                              f'({type(backbone).__name__}): the backbone keeps its '
                              'initial weights (its init_cfg); a checkpoint of another '
                              'backbone or width?', logger='current', level=logging.WARNING)
            return
        if lines:
            lines += [note for h in converters for note in h.notes]
            hint = {
                'evaluated': 'Evaluate it with the config it was trained with. A backbone '
                             "checkpoint goes into the config's init_cfg, not here.",
                'resumed': 'Resume it with the config it was trained with; to start a changed '
                           'model from its weights, give it as load_from without --resume '
                           '(and resume=False in the config).',
                'fine-tuned': 'None of its tensors fits the model, so nothing would be loaded. '
                              'A backbone checkpoint goes into model.backbone.init_cfg='
                              "dict(type='Pretrained', checkpoint=...), not load_from."
            }[self.action]
            raise CheckpointMismatchError('\n'.join(
                [f'{source} does not fit the {type(model).__name__} of this config (a '
                 f'checkpoint of another model or config?); it is not {self.action}:'] + lines +
                [hint]))
        if self.action == 'resumed':
            # what mmengine's resume reads next (it failed with KeyError: 'meta', no file named)
            meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
            lacks = [k for k in ('epoch', 'iter') if k not in meta]
            lacks = [f"meta['{k}']" for k in lacks] + (
                [] if 'message_hub' in checkpoint else ["'message_hub'"])
            if lacks:
                raise CheckpointMismatchError(
                    f'{source} holds weights only, not the state of a training run (no '
                    f'{", ".join(lacks)}: a released model or a converted file?); it is not '
                    'resumed. To start training from its weights, give it as load_from '
                    'without --resume (and resume=False in the config: resume=True with '
                    'load_from resumes from it).')
        if self.action == 'evaluated':
            # a model of other classes than the dataset's is scored label for label against
            # the wrong names (see eval_class_errors)
            from .model_fit import dataset_classes, eval_class_errors
            key, dataset = _evaluated_dataset(runner)
            errors = [] if dataset is None else eval_class_errors(
                learnt_classes(checkpoint), f'{source}\'s meta',
                dataset_classes(dataset), f'the evaluated dataset ({key}, '
                f'{type(dataset).__name__})')
            if errors:
                raise CheckpointMismatchError(f'{errors[0]}; it is not evaluated.')
        print_log(f'{source}: all {len(state_dict)} tensors fit the model', logger='current')
