"""Layer-wise learning-rate decay (BEiT, MAE, ViTDet recipes) for the mmvtx backbones."""
import re
from typing import List

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

from mmvtx.registry import OPTIM_WRAPPER_CONSTRUCTORS

BLOCK = re.compile(r'^backbone\.(?:stages\.\d+\.)?blocks\.\d+\.')
NO_DECAY = ('pos_embed', 'cls_token', 'register_tokens', 'relative_position_bias_table')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Scales the learning rate of backbone block ``i`` (of ``N``, counted across stages) by
    ``decay_rate ** (N + 1 - layer_id)``: the embeddings get ``layer_id`` 0, block ``i`` gets
    ``i + 1`` (patch merging / token embedding between stages share the preceding block's id),
    and everything outside the backbone (neck, heads) ``N + 1``, i.e. the full rate.
    Biases, norms, position embeddings, [CLS] and register tokens and Swin's relative position
    bias tables get no weight decay (ViTDet's decomposed relative position tables do, as in
    detectron2).

    ``paramwise_cfg=dict(layer_decay_rate=0.7)``; e.g. ViTDet's ViT-B recipe."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        self.decay_rate = paramwise_cfg.pop('layer_decay_rate', 0.7)
        super().__init__(optim_wrapper_cfg, None)

    def __call__(self, model: nn.Module):
        if hasattr(model, 'module'):  # DDP
            model = model.module
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
        block_ids, layer_of = {}, {}
        current = 0
        for name, _ in named:
            m = BLOCK.match(name)
            if m:
                current = block_ids.setdefault(m.group(0), len(block_ids) + 1)
            layer_of[name] = current if name.startswith('backbone.') else None
        num_layers = len(block_ids)
        wd = self.base_wd or 0.0
        for name, param in named:
            if not param.requires_grad:
                continue
            layer_id = layer_of[name] if layer_of[name] is not None else num_layers + 1
            scale = self.decay_rate ** (num_layers + 1 - layer_id)
            no_decay = param.ndim == 1 or name.endswith('.bias') or any(
                k in name for k in NO_DECAY)
            params.append(dict(params=[param], lr=self.base_lr * scale,
                               weight_decay=0.0 if no_decay else wd))
        print_log(f'layer decay {self.decay_rate} over {num_layers} backbone blocks: lr x '
                  f'{self.decay_rate ** (num_layers + 1):.4f} (embeddings) .. 1 (heads)',
                  logger='current')
