"""Layer-wise learning-rate decay (BEiT, MAE, ViTDet recipes) for the mmvtx backbones."""
import re
from typing import List

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

from mmvtx.engine._model import unwrap_model
from mmvtx.registry import OPTIM_WRAPPER_CONSTRUCTORS

BLOCK = re.compile(r'^backbone\.(?:stages\.\d+\.)?blocks\.\d+\.')
NO_DECAY = ('pos_embed', 'cls_token', 'register_tokens', 'relative_position_bias_table')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Scales the learning rate of backbone block ``i`` (of ``N``, counted across stages) by
    ``decay_rate ** (N + 1 - layer_id)``: the embeddings get ``layer_id`` 0, block ``i`` gets
    ``i + 1`` (patch merging / token embedding between stages share the preceding block's id),
    and everything after the last block (the backbone's output norms, ViT's feature pyramid)
    and outside the backbone (neck, heads) ``N + 1``, i.e. the full rate. ``N`` counts the
    blocks up to the deepest one that is trained (stages no returned map passes through are
    not).
    Biases, norms, position embeddings, [CLS] and register tokens and Swin's relative position
    bias tables get no weight decay (ViTDet's decomposed relative position tables do, as in
    detectron2).

    ``paramwise_cfg=dict(layer_decay_rate=0.7)``; e.g. ViTDet's ViT-B recipe.
    ``custom_keys`` (mmengine's meaning: the longest key contained in a parameter's name) apply
    on top: ``lr_mult`` multiplies the decayed rate, ``decay_mult`` sets the weight decay to
    ``weight_decay * decay_mult`` (also where the rules above give none). mmengine's
    ``norm_decay_mult``, ``bias_decay_mult`` and ``flat_decay_mult`` are taken at 0 (what the
    rules above do; mmdet's and mmseg's Mask2Former configs set ``norm_decay_mult=0.0``) and
    ``bypass_duplicate`` at either value; other values and ``paramwise_cfg`` options of
    mmengine's constructor are refused by name rather than ignored."""

    CUSTOM_KEY_OPTIONS = ('lr_mult', 'decay_mult')

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        self.decay_rate = paramwise_cfg.pop('layer_decay_rate', 0.7)
        rate = self.decay_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ValueError(f'LayerDecayOptimWrapperConstructor: layer_decay_rate={rate!r} '
                             'must be a number in (0, 1]')
        self.custom_keys = dict(paramwise_cfg.pop('custom_keys', None) or {})
        # mmengine's options for what this constructor already does (mmdet's and mmseg's
        # Mask2Former configs set norm_decay_mult=0.0): taken at that value, refused otherwise
        for key in ('norm_decay_mult', 'bias_decay_mult', 'flat_decay_mult'):
            if key in paramwise_cfg and paramwise_cfg[key] in (0, 0.0) and not isinstance(
                    paramwise_cfg[key], bool):
                paramwise_cfg.pop(key)
        if paramwise_cfg.get('bypass_duplicate') in (True, False):
            paramwise_cfg.pop('bypass_duplicate')  # parameters are taken once each anyway
        if paramwise_cfg:
            raise ValueError(f'LayerDecayOptimWrapperConstructor: paramwise_cfg options '
                             f'{sorted(paramwise_cfg)} are not supported (it takes '
                             f'layer_decay_rate and custom_keys; biases, norms, position '
                             f'embeddings and tokens already get no weight decay: '
                             f'norm_decay_mult, bias_decay_mult and flat_decay_mult are '
                             f'taken at 0)')
        for key, opts in self.custom_keys.items():
            bad = sorted(set(opts) - set(self.CUSTOM_KEY_OPTIONS)) if isinstance(
                opts, dict) else opts
            if bad:
                raise ValueError(f'LayerDecayOptimWrapperConstructor: custom_keys[{key!r}]='
                                 f'{opts!r}: only {self.CUSTOM_KEY_OPTIONS} are supported')
        super().__init__(optim_wrapper_cfg, None)
        if not isinstance(self.base_lr, (int, float)):
            raise ValueError(f'LayerDecayOptimWrapperConstructor: optimizer.lr='
                             f'{self.base_lr!r}; the decay scales it, so set it explicitly')

    def __call__(self, model: nn.Module):
        model = unwrap_model(model)
        wrapper_cfg = self.optim_wrapper_cfg.copy()
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        optimizer_cfg = self.optimizer_cfg.copy()
        params: List[dict] = []
        self.add_params(params, model)
        optimizer_cfg['params'] = params
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))

    def add_params(self, params: List[dict], module: nn.Module, **kwargs):
        named = list(module.named_parameters())
        block_of = {}
        for name, _ in named:
            m = BLOCK.match(name)
            if m:
                block_of[name] = m.group(0)
        blocks = list(dict.fromkeys(block_of.values()))
        # blocks after the last one that trains (Swin's stages past the deepest level of
        # out_indices: no returned map passes through them) are not trained: the deepest block
        # a map comes from is the one next to the neck
        by_name = dict(named)
        trained = [b for n, b in block_of.items() if by_name[n].requires_grad]
        if trained:
            blocks = blocks[:blocks.index(trained[-1]) + 1]
        block_ids = {b: i + 1 for i, b in enumerate(blocks)}
        num_layers = len(block_ids)
        if not num_layers:
            raise ValueError('LayerDecayOptimWrapperConstructor: the model has no backbone '
                             'blocks (parameters named backbone.blocks.N. or '
                             'backbone.stages.N.blocks.M.) to decay the learning rate over')
        # the embeddings (before the first block) get layer 0, what lies between blocks (patch
        # merging, a stage's token embedding) the preceding block's, and what comes after the
        # last block (output norms, ViT's feature pyramid: new layers of a detector) the full
        # rate, as detectron2's ViTDet, BEiT/mmseg and SimMIM's Swin give them
        last = max(i for i, (n, _) in enumerate(named) if block_of.get(n) in block_ids)
        layer_of, current = {}, 0
        for i, (name, _) in enumerate(named):
            if name in block_of:
                current = block_ids.get(block_of[name], num_layers)
            inside = name.startswith('backbone.') and (i <= last or name in block_of)
            layer_of[name] = current if inside else None
        wd = self.base_wd or 0.0
        sorted_keys = sorted(sorted(self.custom_keys), key=len, reverse=True)
        for name, param in named:
            if not param.requires_grad:
                continue
            layer_id = layer_of[name] if layer_of[name] is not None else num_layers + 1
            scale = self.decay_rate ** (num_layers + 1 - layer_id)
            no_decay = param.ndim == 1 or name.endswith('.bias') or any(
                k in name for k in NO_DECAY)
            lr, decay = self.base_lr * scale, 0.0 if no_decay else wd
            key = next((k for k in sorted_keys if k in name), None)
            if key is not None:
                lr *= self.custom_keys[key].get('lr_mult', 1.0)
                if 'decay_mult' in self.custom_keys[key]:
                    decay = wd * self.custom_keys[key]['decay_mult']
            params.append(dict(params=[param], lr=lr, weight_decay=decay))
        print_log(f'layer decay {self.decay_rate} over {num_layers} backbone blocks: lr x '
                  f'{self.decay_rate ** (num_layers + 1):.4f} (embeddings) .. 1 (heads)',
                  logger='current')
