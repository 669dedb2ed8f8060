"""What the three backbones share: presets and their overrides, argument checks, ``frozen_stages``
and ``norm_eval`` in ``train()``, activation checkpointing of blocks, and weight initialisation
with pretrained loading."""
import contextlib
import difflib
import functools
import inspect
import logging
import numbers
import os
import os.path as osp
import re
from typing import List, Optional, Sequence, Tuple

import torch
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmvtx.models.layers.compat import is_compiling, register_load_state_dict_pre_hook
from mmvtx.models.layers.patch_embed import adapt_input_channels
from mmvtx.utils.checkpoint import (BACKBONE_FAMILIES, CheckpointMismatchError,
                                    ConvertedCheckpoint, UnknownLayoutError, backbone_family,
                                    check_finite, load_converted, nested_layouts,
                                    read_checkpoint, resolve_checkpoint_path, source_config,
                                    strip_prefix, unsupported_family)


def stage_depths(sd: dict) -> Tuple[int, ...]:
    """Blocks per stage of weights in a staged backbone's names (``stages.<i>.blocks.<j>.``:
    mmvtx's Swin and CvT)."""
    found = {}
    for k in sd:
        m = re.match(r'stages\.(\d+)\.blocks\.(\d+)\.', k)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            found[stage] = max(found.get(stage, 0), block + 1)
    return tuple(found[i] for i in range(len(found)))


def forward_block(block: nn.Module, x: torch.Tensor, *args, with_cp: bool = False):
    """``block(x, *args)``, under activation checkpointing (non-reentrant, so DDP-safe) when
    ``with_cp`` and the block trains with a gradient flowing in or to its own weights (the
    first block after ``frozen_stages`` gets an input without gradient and trains all the
    same: checkpointed too, or its activations would all be kept). The recomputation in backward
    does not update BatchNorm running statistics a second time (CvT's projections), so they
    are the same with and without ``with_cp``. Under ``torch.compile`` (which accepts only
    ``TorchDispatchMode`` contexts there) no context is passed: the compiled graph applies the
    statistics' update once, in the forward, and its backward recomputes without mutating."""
    if with_cp and block.training and torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in block.parameters())):
        if is_compiling():
            return cp.checkpoint(block, x, *args, use_reentrant=False)
        return cp.checkpoint(block, x, *args, use_reentrant=False,
                             context_fn=functools.partial(_recompute_contexts, block))
    return block(x, *args)


def _recompute_contexts(block: nn.Module):
    return contextlib.nullcontext(), _batch_stats_only(block)


@contextlib.contextmanager
def _batch_stats_only(block: nn.Module):
    """The recomputation runs BatchNorm layers as the forward did (training mode, the same
    saved tensors), then puts their running statistics back as they were."""
    saved = [(b, b.clone()) for m in block.modules()
             if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
             for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


class VisionBackbone(BaseModule):
    """Base of :class:`SwinTransformer`, :class:`ViT` and :class:`CvT`.

    Subclasses define ``arch_zoo`` (preset name -> settings), ``num_features`` (channels per
    level; or override ``out_channels``), ``_frozen_modules()``, ``_default_init()`` and
    ``convert_layout()`` (any public checkpoint layout -> ours; ``convert_state_dict()`` adds
    what every architecture shares), and may set ``hf_model_types`` and ``input_conv``."""
    arch_zoo: dict = {}
    arch_aliases: dict = {}
    # transformers' ``model_type`` of this architecture's checkpoints (their ``config.json``
    # tells the head count, which no weight's shape shows)
    hf_model_types: Tuple[str, ...] = ()
    # the first convolution's weight: an RGB checkpoint's is adapted to other input channels
    input_conv: str = 'patch_embed.proj.weight'
    # the backbone family whose weights it loads (:data:`BACKBONE_FAMILIES`)
    family: str = ''
    # the layouts its checkpoints come in (how a backbone kept under another name is found)
    checkpoint_formats: Tuple = ()
    frozen_stages: int = -1
    norm_eval: bool = False

    def __init__(self, init_cfg=None):
        self.check_init_cfg(init_cfg)
        super().__init__(init_cfg=init_cfg)
        # a whole model's state dict with this backbone's part in another codebase's layout
        # (mmdet's released Mask R-CNN Swin loaded by mmdet's init_detector, DetInferencer,
        # mmseg's init_model, mmengine's load_checkpoint, model.load_state_dict) is converted
        # as it is loaded; the tools' ConvertCheckpointHook has done so before their fit check
        register_load_state_dict_pre_hook(self, VisionBackbone._convert_foreign_part)

    @staticmethod
    def _convert_foreign_part(module: 'VisionBackbone', state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys, error_msgs):
        resized = {}
        done = module.convert_keys_under(state_dict, prefix, resized)
        if done:
            print_log(done, logger='current')
        if resized:
            print_log(f'{prefix}*: {", ".join(sorted(resized))} of another window or grid size '
                      'were resampled to the model\'s: this is not the network the file was '
                      'trained as', logger='current', level=logging.WARNING)

    # ------------------------------------------------------------------------ settings
    @classmethod
    def pretrained_init_cfg(cls, pretrained, init_cfg):
        """mmseg's backbone argument ``pretrained``: its segmentors (``EncoderDecoder``) pass
        the config's ``model.pretrained`` to the backbone, and every mmseg base model on ResNet
        sets it. As in mmseg's own backbones, a path is a deprecated spelling of
        ``init_cfg=dict(type='Pretrained', checkpoint=path)``, and both together are refused."""
        if pretrained is None:
            return init_cfg
        if not isinstance(pretrained, str):
            raise ValueError(f'{cls.__name__}: pretrained={pretrained!r} must be a checkpoint '
                             'path or None')
        where = ("(mmseg's segmentors pass model.pretrained to the backbone; a base config "
                 "on another backbone sets it to that backbone's weights)")
        if init_cfg:
            raise ValueError(f'{cls.__name__}: pretrained={pretrained!r} {where} and '
                             f'init_cfg={init_cfg!r} are both set: set model.pretrained=None '
                             'and keep the backbone\'s init_cfg')
        print_log(f'{cls.__name__}: pretrained={pretrained!r} {where} is loaded as '
                  f"init_cfg=dict(type='Pretrained', checkpoint={pretrained!r}); set "
                  'model.pretrained=None if these are not weights for this backbone',
                  logger='current', level=logging.WARNING)
        return dict(type='Pretrained', checkpoint=pretrained)

    @classmethod
    def check_init_cfg(cls, init_cfg):
        """``init_cfg`` is None, a dict with a ``type`` (mmengine's initialisers, ``Pretrained``)
        or a list of them: a checkpoint path given as ``init_cfg`` itself was refused by
        mmengine only at ``init_weights``, without naming it (``'str' object has no attribute
        'pop'``)."""
        if not init_cfg:
            return
        cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
        for cfg in cfgs:
            if not (isinstance(cfg, dict) and 'type' in cfg):
                hint = (f"; for weights: init_cfg=dict(type='Pretrained', checkpoint={cfg!r})"
                        if isinstance(cfg, str) else '')
                raise ValueError(f'{cls.__name__}: init_cfg={init_cfg!r} must be a dict with a '
                                 "'type' (e.g. dict(type='Pretrained', checkpoint=PATH)), a list "
                                 f'of them, or None; {cfg!r} is not one{hint}')

    @classmethod
    def resolve_arch(cls, arch, **overrides) -> dict:
        """A copy of a preset's settings by (case-insensitive) name, or of the user's dict, with
        the ``overrides`` that are not None (explicit arguments win over the preset)."""
        if isinstance(arch, dict):
            cfg = dict(arch)
            keys = set(next(iter(cls.arch_zoo.values())))
            unknown = sorted(set(cfg) - keys)
            missing = sorted(keys - set(cfg) - {k for k, v in overrides.items() if v is not None})
            if unknown or missing:
                raise ValueError(f'{cls.__name__}: arch dict {arch} ' + '; '.join(
                    ([f'has unknown keys {unknown}'] if unknown else []) +
                    ([f'lacks {missing}'] if missing else [])) + f'; its keys are {sorted(keys)}')
        elif not isinstance(arch, (str, int)) or isinstance(arch, bool):
            raise ValueError(f'{cls.__name__}: arch={arch!r} must be a preset name or a dict')
        else:
            key = str(arch).lower()
            key = cls.arch_aliases.get(key, key)
            if key not in cls.arch_zoo:
                raise ValueError(f'{cls.__name__}: unknown arch {arch!r}; presets are '
                                 f'{sorted(cls.arch_zoo)} or a dict')
            cfg = dict(cls.arch_zoo[key])
        cfg.update({k: v for k, v in overrides.items() if v is not None})
        return cfg

    @classmethod
    def check_out_indices(cls, out_indices, num_levels: int) -> Tuple[int, ...]:
        """Sorted, non-negative level indices; negative ones count from the last level."""
        given = out_indices
        if isinstance(out_indices, numbers.Integral) and not isinstance(out_indices, bool):
            out_indices = (out_indices,)
        valid = (isinstance(out_indices, Sequence) and not isinstance(out_indices, (str, bytes))
                 and len(out_indices) > 0 and all(
                     isinstance(i, numbers.Integral) and not isinstance(i, bool)
                     and -num_levels <= i < num_levels for i in out_indices))
        out = tuple(sorted(i % num_levels for i in out_indices)) if valid else ()
        if not valid or len(set(out)) != len(out):
            raise ValueError(f'{cls.__name__}: out_indices={given!r} must be distinct integer '
                             f'indices in [0, {num_levels})')
        return out

    @classmethod
    def refuse_unknown_arguments(cls, kwargs: dict, also: Sequence[str] = ()):
        """Keywords that no argument of this backbone takes (a config written for another
        codebase's backbone, a misspelling): refused naming each with its nearest argument name
        and the full list (Python's ``TypeError`` named only the first, with no near miss:
        ``embed_dim`` for ``embed_dims``). ``also``: names taken through ``**kwargs``."""
        if not kwargs:
            return
        names = [n for n, p in inspect.signature(cls.__init__).parameters.items()
                 if n != 'self' and p.kind is not p.VAR_KEYWORD] + list(also)
        parts = []
        for key in sorted(kwargs):
            near = difflib.get_close_matches(key, names, n=1, cutoff=0.7)
            parts.append(f'{key}={kwargs[key]!r}' + (f' (did you mean {near[0]}?)' if near else ''))
        raise TypeError(f'{cls.__name__}: unknown argument(s) {", ".join(parts)}; '
                        f'{cls.__name__} takes {", ".join(names)}')

    # Argument checks: each names the argument, its value and what is allowed.
    @classmethod
    def check_int(cls, name: str, value, low: int = 1, high: Optional[int] = None) -> int:
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low
                or (high is not None and value > high)):
            allowed = f'[{low}, {high}]' if high is not None else f'>= {low}'
            raise ValueError(f'{cls.__name__}: {name}={value!r} must be an integer {allowed}')
        return int(value)

    @classmethod
    def check_ints(cls, name: str, values, length: Optional[int] = None,
                   low: int = 1) -> Tuple[int, ...]:
        """A non-empty sequence of integers >= ``low`` (of ``length`` entries if given)."""
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values or (
                length is not None and len(values) != length):
            what = f'{length} integers' if length is not None else 'a non-empty sequence'
            raise ValueError(f'{cls.__name__}: {name}={values!r} must be {what}')
        return tuple(cls.check_int(f'{name}[{i}]', v, low) for i, v in enumerate(values))

    @classmethod
    def check_size(cls, name: str, value, low: int = 1) -> Tuple[int, int]:
        """A side (``int``) or ``(h, w)`` of integers >= ``low``, as ``(h, w)``."""
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            if len(value) != 2:
                raise ValueError(f'{cls.__name__}: {name}={value!r} must be an integer or '
                                 '(h, w)')
            return tuple(cls.check_int(f'{name}[{i}]', v, low) for i, v in enumerate(value))
        side = cls.check_int(name, value, low)
        return side, side

    @classmethod
    def check_bools(cls, **flags):
        """Switches must be True or False (a string such as 'no' would read as True)."""
        for name, value in flags.items():
            if not (isinstance(value, bool) or isinstance(value, numbers.Integral)
                    and value in (0, 1)):
                raise ValueError(f'{cls.__name__}: {name}={value!r} must be True or False')

    @classmethod
    def check_hidden(cls, dims: Sequence[int], mlp_ratio: float):
        """The MLP of the narrowest width keeps at least one hidden unit."""
        if int(min(dims) * mlp_ratio) < 1:
            raise ValueError(f'{cls.__name__}: mlp_ratio={mlp_ratio!r} leaves a width of '
                             f'{min(dims)} no MLP hidden unit')

    @classmethod
    def check_rate(cls, name: str, value) -> float:
        """A probability of dropping, in [0, 1)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
            raise ValueError(f'{cls.__name__}: {name}={value!r} must be a number in [0, 1)')
        return float(value)

    @classmethod
    def check_positive(cls, name: str, value) -> float:
        if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0
                or value == float('inf')):
            raise ValueError(f'{cls.__name__}: {name}={value!r} must be a finite number > 0')
        return float(value)

    @classmethod
    def check_rates(cls, **rates):
        for name, value in rates.items():
            cls.check_rate(name, value)

    @classmethod
    def check_heads(cls, widths: Sequence[int], num_heads: Sequence[int]):
        """Every stage's width must split evenly into its heads."""
        for d, h in zip(widths, num_heads):
            if d % h:
                raise ValueError(f'{cls.__name__}: a width of {d} is not divisible by '
                                 f'num_heads={h}')

    @classmethod
    def check_frozen_stages(cls, frozen_stages: int, num_stages: int, unit: str = 'stages'):
        cls.check_int('frozen_stages', frozen_stages, -1)
        if frozen_stages > num_stages:
            raise ValueError(f'{cls.__name__}: frozen_stages={frozen_stages} but the model has '
                             f'{num_stages} {unit} (allowed: -1 to {num_stages})')

    @property
    def out_channels(self) -> Tuple[int, ...]:
        """Channels of the returned maps (``num_features`` of the ``out_indices`` levels)."""
        return tuple(self.num_features[i] for i in self.out_indices)

    @property
    def out_strides(self) -> Tuple[int, ...]:
        """Strides of the returned maps (level ``i`` at ``4 * 2 ** i``)."""
        return tuple(4 * 2 ** i for i in self.out_indices)

    def check_input(self, x) -> None:
        if x.dim() != 4:
            raise ValueError(f'{type(self).__name__} expects B x C x H x W, '
                             f'got {tuple(x.shape)}')
        if x.shape[-2] < 1 or x.shape[-1] < 1:  # padding makes any side >= 1 a whole patch
            raise ValueError(f'{type(self).__name__} expects B x C x H x W with H, W >= 1, '
                             f'got {tuple(x.shape)}')

    # ------------------------------------------------------------------------ training behaviour
    def _frozen_modules(self) -> Sequence:
        raise NotImplementedError

    def output_modules(self, read: Sequence[int]) -> List[nn.Module]:
        """The modules that only returned maps other than those at positions ``read`` (of
        ``out_indices``) pass through (an output norm, a pyramid level): where the model never
        reads those maps, their parameters get no gradient."""
        return []

    def _unreached_modules(self) -> List[nn.Module]:
        """The modules no returned map passes through (the stages after the deepest level of
        ``out_indices``, a norm of a level not returned)."""
        return []

    def _freeze_stages(self):
        # parameters no output depends on are not trained: DDP (find_unused_parameters=False)
        # refuses parameters without a gradient at the second iteration; they stay in the
        # state dict, so that checkpoints load and save as for every out_indices
        for m in self._unreached_modules():
            for p in m.parameters():
                p.requires_grad = False
        if self.frozen_stages < 0:
            return
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------ checkpoint-chosen settings
    # A setting that follows the codebase of the checkpoint loaded unless set explicitly (Swin's
    # shift rule, CvT's activation) is kept in an int8 buffer (an index into its choices), so
    # that a run's own checkpoint brings it back wherever it is loaded: ``tools/test.py``,
    # ``--resume``, mmengine's ``load_checkpoint``, ``init_cfg`` (a checkpoint converted by
    # ``tools/model_converters``). A checkpoint without the buffer leaves the setting as it is.
    def _register_setting(self, name: str, choices: Tuple[str, ...], value: str,
                          explicit: bool):
        if '_settings' not in self.__dict__:
            self._settings = {}
            self.register_load_state_dict_post_hook(VisionBackbone._restore_settings)
        self._settings[name] = (tuple(choices), explicit)
        self.register_buffer(name, torch.tensor(choices.index(value), dtype=torch.int8))
        self._apply_setting(name, value)

    def _apply_setting(self, name: str, value: str):
        raise NotImplementedError

    def get_setting(self, name: str) -> str:
        choices, _ = self._settings[name]
        index = int(getattr(self, name))
        if not 0 <= index < len(choices):
            raise CheckpointMismatchError(f'{type(self).__name__}: the checkpoint sets {name}='
                                          f'{index}, not an index into {choices}')
        return choices[index]

    def recorded_setting(self, name: str, converted: ConvertedCheckpoint) -> Optional[str]:
        """The setting an mmvtx checkpoint being converted records (popped from it), or None."""
        recorded = converted.state_dict.pop(name, None)
        if recorded is None:
            return None
        choices, _ = self._settings[name]
        index = int(recorded)
        if not 0 <= index < len(choices):
            raise CheckpointMismatchError(f'{type(self).__name__}: the checkpoint sets {name}='
                                          f'{index}, not an index into {choices}')
        return choices[index]

    def setting_record(self, name: str, value: str) -> torch.Tensor:
        """The buffer value that records ``value`` of setting ``name`` in a state dict: a
        converter puts it in the converted checkpoint, and loading applies it (the converter
        itself changes nothing in the model)."""
        choices, _ = self._settings[name]
        if value not in choices:
            raise ValueError(f'{type(self).__name__}: {name}={value!r} must be one of {choices}')
        return torch.tensor(choices.index(value), dtype=torch.int8)

    def apply_recorded_settings(self, state_dict: dict):
        """Computes with the settings ``state_dict`` records (a converted checkpoint being
        loaded: :meth:`convert_state_dict` has already weighed them against explicit ones)."""
        for name, (choices, _) in self._settings.items():
            if name in state_dict:
                value = choices[int(state_dict[name])]
                if value != self._applied_setting(name):
                    self.set_setting(name, value)

    def set_setting(self, name: str, value: str):
        getattr(self, name).fill_(int(self.setting_record(name, value)))  # value checked there
        self._apply_setting(name, value)

    def setting_explicit(self, name: str) -> bool:
        return self._settings[name][1]

    @staticmethod
    def _restore_settings(module: 'VisionBackbone', incompatible_keys=None):
        for name, (choices, explicit) in module._settings.items():
            applied = module._applied_setting(name)
            loaded = module.get_setting(name)
            if loaded == applied:
                continue
            if explicit:  # the user's argument wins over the checkpoint's record
                print_log(f'{type(module).__name__}: the checkpoint was trained with {name}='
                          f'{loaded!r}; keeping the {applied!r} set explicitly',
                          logger='current', level=logging.WARNING)
                module.set_setting(name, applied)
            else:
                module.set_setting(name, loaded)

    def _applied_setting(self, name: str) -> str:
        """The value the modules compute with (the buffer may just have been overwritten)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------ weights
    def _default_init(self):
        raise NotImplementedError

    def convert_layout(self, state_dict: dict,
                       source_config: Optional[dict] = None) -> ConvertedCheckpoint:
        """Any public checkpoint layout of this architecture -> this model's names
        (``source_config``: transformers' config.json of the file, where it has one)."""
        raise NotImplementedError

    def convert_state_dict(self, state_dict: dict,
                           source_config: Optional[dict] = None) -> ConvertedCheckpoint:
        """Any public checkpoint of this architecture -> this model's weights
        (:meth:`convert_layout`; ``source_config``: the file's config.json, see
        :meth:`check_source_config`), an RGB patch embedding adapted to another
        ``in_channels`` (grey, RGB-D, multispectral input), as resampled tables are: named in
        ``resized`` (logged, and a whole model's file so adapted is not taken for the one it
        was)."""
        self.check_family(state_dict)
        converted = self.convert_layout(state_dict, source_config)
        self.adapt_rgb_input(converted.state_dict, converted.resized)
        hint = self.architecture_hint(converted.state_dict)
        if hint:  # said if the weights do not fit
            converted.hint = '\n'.join(h for h in (converted.hint, hint) if h)
        return converted

    def checkpoint_architecture(self, sd: dict) -> dict:
        """The settings of :attr:`arch_settings` that weights in this model's names show (a
        subset where some, e.g. a ViT's head count, change no shape); {} where none."""
        return {}

    def architecture_hint(self, sd: dict) -> str:
        """A line naming the architecture of converted weights ``sd`` where it is not the
        model's (a Swin-S file given to a Swin-T, a ViT-L to a ViT-B: the mismatch listed keys
        and shapes only), with the preset that has it; '' otherwise."""
        try:
            theirs = self.checkpoint_architecture(sd)
        except (KeyError, IndexError, ValueError, AttributeError):
            return ''
        ours = {k: self.arch_settings[k] for k in theirs}
        if not theirs or theirs == ours:
            return ''
        presets = [name for name, cfg in self.arch_zoo.items()
                   if all(tuple(cfg[k]) == tuple(v) if isinstance(v, tuple) else cfg[k] == v
                          for k, v in theirs.items())]
        what = ', '.join(f'{k}={v!r}' for k, v in theirs.items())
        mine = ', '.join(f'{k}={v!r}' for k, v in ours.items())
        return (f'  hint: the checkpoint is {type(self).__name__} {what}' +
                (f" (arch={presets[0]!r})" if len(presets) == 1 else '') +
                f'; the model has {mine}: build it as the checkpoint is')

    def check_family(self, state_dict: dict):
        """Refuses the weights of another backbone family (a Swin file given to a ViT) naming
        what they are: some layouts of two families share names (the Swin authors' ``layers.*``
        and mmpretrain's ViT), and such a file was converted as the other family's layout and
        refused as a long list of renamed keys that fit nothing, under that layout's name."""
        other = unsupported_family(state_dict)
        if other is not None:  # were named another family's, or failed half-way converting
            what, key, why = other
            raise CheckpointMismatchError(
                f'{type(self).__name__}: {what} checkpoint (e.g. {key!r}), which no mmvtx '
                f'backbone computes: {why}. Its weights cannot give that network\'s features; '
                'give this backbone a checkpoint of its own architecture.')
        found = backbone_family(state_dict)
        if found is None or not self.family or found[0] == self.family:
            return
        family, what, key = found
        mine = next(w for f, w, _ in BACKBONE_FAMILIES if f == self.family)
        raise CheckpointMismatchError(
            f'{type(self).__name__}: not {mine} checkpoint: it holds the weights of {what} '
            f'(e.g. {key!r}). Load it into a {family} (type=\'mmvtx.{family}\'), or give '
            f'this backbone {mine} checkpoint.')

    def convert_keys_under(self, state_dict: dict, prefix: str,
                           resized: Optional[dict] = None,
                           unknown: Optional[List[str]] = None) -> Optional[str]:
        """Converts, in place, the keys of ``state_dict`` under ``prefix`` (this backbone's
        part of a whole model's state dict, e.g. ``backbone.``) from another codebase's layout
        to this model's names; an RGB patch embedding in this model's names is adapted to its
        ``in_channels``. A part in this model's names, or in no layout the converter knows, is
        left as it is (``unknown``, if given, receives a line saying why). ``resized``, if
        given, receives the keys of resampled or adapted tensors and the file's shapes. Returns
        a line saying what was converted, or None."""
        keys = [k for k in state_dict if k.startswith(prefix)]
        if not keys:
            return None
        sub = {k[len(prefix):]: state_dict[k] for k in keys}
        own = self.state_dict(keep_vars=True)
        if all(k in own for k in sub):  # this model's own names
            # an RGB model's file fine-tuned with in_channels != 3 (its patch embedding is
            # adapted, as init_cfg adapts it, not left at its random init)
            adapted = {}
            if not self.adapt_rgb_input(sub, adapted):
                return None
            key = prefix + self.input_conv
            state_dict[key] = sub[self.input_conv]
            if resized is not None:
                resized[key] = tuple(adapted[self.input_conv].shape)
            return (f'{key}: the RGB patch embedding adapted to in_channels='
                    f'{state_dict[key].shape[1]} of {type(self).__name__}')
        # the converter changes nothing in the model: the checkpoint-chosen settings (Swin's
        # shift rule) it picks for the file's codebase are in the converted weights, and
        # loading them applies them (the load_state_dict post-hook)
        try:
            converted = self.convert_state_dict(dict(sub))
        except CheckpointMismatchError as e:  # not a layout it knows: the fit check reports it
            if unknown is not None:
                unknown.append(f'{prefix}*: {e}')
            return None
        if converted.source == 'mmvtx':
            return None
        for k in keys:
            del state_dict[k]
        state_dict.update({prefix + k: v for k, v in converted.state_dict.items()})
        if resized is not None:
            resized.update({prefix + k: tuple(v.shape) for k, v in converted.resized.items()})
        return (f'{prefix}*: {len(sub)} tensors in the {converted.source} layout converted to '
                f'{len(converted.state_dict)} of {type(self).__name__}' + (
                    f' ({len(converted.resized)} tables of another window or grid size '
                    'resampled)' if converted.resized else ''))

    def adapt_rgb_input(self, sd: dict, resized: dict) -> bool:
        """Adapts, in place, ``sd``'s RGB patch embedding (in this model's names) to the
        model's ``in_channels`` (timm's rule), the file's tensor put in ``resized``; whether
        it did."""
        key = self.input_conv
        own = dict(self.named_parameters()).get(key)
        if not (key in sd and own is not None and sd[key].dim() == own.dim() == 4 and
                sd[key].shape[1] == 3 and own.shape[1] != 3 and
                sd[key].shape[:1] + sd[key].shape[2:] == own.shape[:1] + own.shape[2:]):
            return False
        resized[key] = sd[key]
        sd[key] = adapt_input_channels(sd[key], own.shape[1])
        how = ('summed over R, G, B' if own.shape[1] == 1 else
               f'R, G, B cycled over the channels, scaled by 3/{own.shape[1]}')
        print_log(f'{type(self).__name__}: the checkpoint\'s RGB patch embedding adapted to '
                  f'in_channels={own.shape[1]} ({how})', logger='current', level=logging.INFO)
        return True

    def load_pretrained(self, checkpoint, prefix: Optional[str] = None, strict: bool = True,
                        allow_nonfinite: bool = False) -> ConvertedCheckpoint:
        """Loads a checkpoint file (path, URL or bare file name in the hub cache) or an
        in-memory state dict, in any layout :meth:`convert_state_dict` knows; ``prefix``
        selects a sub-dict (``None``: a whole detector's ``backbone.*`` automatically). Raises
        :class:`~mmvtx.utils.checkpoint.CheckpointMismatchError` naming every missing,
        unexpected and mis-shaped key, and every tensor with NaN/inf values unless
        ``allow_nonfinite``. Returns what was loaded."""
        if isinstance(checkpoint, os.PathLike):  # a pathlib.Path, read as its str
            checkpoint = os.fspath(checkpoint)
        origin = resolve_checkpoint_path(checkpoint) if isinstance(checkpoint, str) else ''
        config = self.check_source_config(origin) if origin else None
        state_dict = strip_prefix(read_checkpoint(origin if origin else checkpoint, prefix),
                                  prefix, origin)
        if not allow_nonfinite:
            check_finite(state_dict, origin)
        # the conversion may read the source's config.json (ViT: its pretraining grid)
        try:
            converted = self.convert_state_dict(state_dict, config)
        except UnknownLayoutError as e:
            if prefix is not None:
                raise
            state_dict = self._nested_backbone(state_dict, origin, e)
            converted = self.convert_state_dict(state_dict, config)
        load_converted(self, converted, strict=strict, origin=origin)
        if origin:
            from mmvtx.utils.standin import is_standin_checkpoint
            if is_standin_checkpoint(origin):
                print_log(f'{origin} is a STAND-IN with random weights (written by '
                          'tools/misc/make_standin_checkpoints.py), not the released model: '
                          'delete it and let the real file be downloaded to fine-tune for real',
                          logger='current', level=logging.WARNING)
        return converted

    def _nested_backbone(self, state_dict: dict, origin: str,
                         error: UnknownLayoutError) -> dict:
        """The weights of a model that keeps this backbone under a name of its own (not
        ``backbone.``: transformers' Mask2Former ``model.pixel_level_module.encoder.``, a PyTorch
        Lightning module's ``model.``), where exactly one such place holds a layout this
        backbone knows (:func:`~mmvtx.utils.checkpoint.nested_layouts`), under its own names;
        ``error`` (the layout's) re-raised otherwise, naming the places found."""
        found = []
        for where, layout in nested_layouts(state_dict, self.checkpoint_formats):
            sub = strip_prefix(state_dict, where)
            family = backbone_family(sub)  # its keys show this backbone's family's layers
            # and an image encoder's input embedding (not a text encoder's layers: CLIP's)
            if family is not None and family[0] == self.family and \
                    unsupported_family(sub) is None and any('embed' in k for k in sub):
                found.append((where, layout))
        if len(found) != 1:
            if found:
                places = ', '.join(f'{p!r} ({layout} layout)' for p, layout in found)
                raise CheckpointMismatchError(
                    f'{error}\n  it holds weights in known layouts under {places}: name the one '
                    "to load with init_cfg's prefix (load_pretrained's prefix=), e.g. "
                    f'prefix={found[0][0]!r}') from error
            raise error
        where, layout = found[0]
        print_log(f'{origin or "the checkpoint"}: loading the weights under {where!r} (the '
                  f'{layout} layout of {type(self).__name__} there)', logger='current',
                  level=logging.INFO)
        return strip_prefix(state_dict, where)

    def check_source_config(self, origin: str) -> Optional[dict]:
        """Refuses weights whose ``config.json`` (transformers' ``save_pretrained``) gives
        another number of attention heads than this model's: the weights would load, as a
        head count changes no shape, and attend with the wrong split of the channels. Returns
        that config (None where there is none)."""
        config = source_config(origin, self.hf_model_types)
        if config is None:
            return None
        name = 'num_attention_heads' if 'num_attention_heads' in config else 'num_heads'
        theirs, ours = config.get(name), self.arch_settings['num_heads']
        as_list = (lambda v: list(v) if isinstance(v, (list, tuple)) else [v])
        if theirs is None or len(as_list(theirs)) != len(as_list(ours)) or \
                as_list(theirs) == as_list(ours):
            return config  # another number of stages is named by the weights' keys
        where = osp.join(osp.dirname(origin), 'config.json')
        raise CheckpointMismatchError(
            f'{type(self).__name__}: {origin} was saved from a model with {name}={theirs} '
            f'({where}, model_type {config["model_type"]!r}); this model has num_heads={ours}. '
            'The weights would load (a head count changes no shape) and attend with another '
            f'split of the channels: build the backbone with num_heads={theirs}')

    def init_weights(self):
        """The papers' default init (truncated normal), then, as mmengine orders a list of
        ``init_cfg``, the other types through mmengine's initialisers and last the checkpoint of
        ``dict(type='Pretrained', checkpoint=...)``, converted from whichever public layout it
        is in."""
        self._default_init()
        cfgs = self.init_cfg if isinstance(self.init_cfg, (list, tuple)) else [self.init_cfg]
        cfgs = [c for c in cfgs if c]
        pretrained = [c for c in cfgs if isinstance(c, dict) and c.get('type') == 'Pretrained']
        others = [c for c in cfgs if c not in pretrained]
        if others:  # as mmengine: the other initialisers first, a checkpoint over them
            from mmengine.model import initialize
            initialize(self, others)
        for cfg in pretrained:
            if not cfg.get('checkpoint'):
                raise ValueError(f"{type(self).__name__}: init_cfg={cfg!r} names no checkpoint;"
                                 " set checkpoint='a path, URL or released file name'")
            checkpoint = cfg['checkpoint']
            if isinstance(checkpoint, os.PathLike):
                checkpoint = os.fspath(checkpoint)
            scheme = checkpoint.split('://')[0] if isinstance(checkpoint, str) and \
                '://' in checkpoint else None
            if scheme is not None and scheme not in ('http', 'https'):
                raise ValueError(
                    f'{type(self).__name__}: checkpoint={checkpoint!r} is a name in mmcv\'s model '
                    f'zoo ({scheme}://), which names other backbones\' weights (ResNet, HRNet, '
                    '...) and is not read here; from an mmseg base config\'s model.pretrained? '
                    'set model.pretrained=None, and give this backbone\'s weights as a path, URL '
                    'or released file name')
            self.load_pretrained(checkpoint, prefix=cfg.get('prefix'),
                                 strict=cfg.get('strict', True),
                                 allow_nonfinite=cfg.get('allow_nonfinite', False))
        self._is_init = True
