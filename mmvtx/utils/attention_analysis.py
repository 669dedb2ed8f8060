"""Where the attention of each head goes, in image pixels: the mean attention distance of the ViT
paper (Dosovitskiy et al. 2021, Figure 7: the attention-weighted distance between a query's
position and its keys' positions, averaged over queries and images), for ViT, Swin and CvT.

Every attention call of the three backbones goes through ``layers/attention.py::attention``;
an :class:`~mmvtx.models.layers.attention.AttentionRecorder` keeps each call's probabilities,
and a forward pre-hook on each attention module says which layer made the call and how its
queries and keys sit on the image:

* ViT (``Attention``): the patch tokens on the patch grid (stride = patch size); [CLS],
  register and storage tokens are left out as queries and keys, and each query's weights over
  the patch tokens are renormalised to sum to 1 (where in the image it looks). ViTDet's window
  blocks: positions of the window slots, as Swin's without shift (padded slots left out).
* Swin (``WindowMSA``): queries and keys are the slots of the windows of the padded map; with
  shifted windows (SW-MSA) each slot is mapped back through the reverse cyclic shift to its
  image position, so a window that wraps around the border measures true distances (the
  shift mask gives ~0 weight across the wrap). The slots of the zero padding to a multiple of
  the window lie outside the image: they are left out as queries and as keys, and each
  query's weights over the real tokens of its window are renormalised to sum to 1 (at small
  sizes most of the weight can fall on padding; the distance is measured over the image).
* CvT (``ConvAttention``): queries on the stage's token grid (stride s), keys and values on the
  grid of the stride-2 convolutional projection: key ``(i, j)`` is centred on query-grid
  position ``(2i, 2j)``. [CLS] is left out as for ViT.

A token ``(i, j)`` of a grid with stride ``s`` sits at pixel ``((i + 0.5) s, (j + 0.5) s)``.
"""
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import nn

from mmvtx.models.layers.attention import AttentionRecorder


@dataclass
class AttentionCall:
    """One attention call: ``probs`` (``... x heads x Nq x Nk``; over the image's tokens only,
    each query's weights summing to 1), the pixel positions of its queries (``... x Nq x 2``,
    broadcasting against the leading dims of ``probs``) and keys, and which queries are real
    (``... x Nq`` bool, or None for all)."""
    layer: str
    kind: str
    probs: torch.Tensor
    q_pos: torch.Tensor
    k_pos: torch.Tensor
    q_valid: Optional[torch.Tensor] = None
    q_stride: float = 1.0  # pixels between neighbouring queries
    k_stride: float = 1.0  # pixels between neighbouring keys


def grid_positions(h: int, w: int, stride: float, step: int = 1) -> torch.Tensor:
    """Pixel centres of an ``h x w`` token grid, row-major, ``h*w x 2`` as (y, x); ``step``:
    the grid samples every ``step``-th token of a finer grid with ``stride``."""
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    pos = torch.stack([ii.flatten(), jj.flatten()], -1).float() * step
    return (pos + 0.5) * stride


def window_slot_positions(H: int, W: int, window_size: int, shift_size: int,
                          stride: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pixel positions of the window slots of an ``H x W`` map (``nW x M*M x 2``: the padded map
    cyclically shifted by ``-shift_size`` and partitioned, each slot mapped back to where its
    token sits before the shift) and whether a slot is a real token (``nW x M*M``)."""
    from mmvtx.models.layers.window import window_slot_coords
    slots = window_slot_coords(H, W, window_size, shift_size).float()  # nW x N x 2
    valid = (slots[..., 0] < H) & (slots[..., 1] < W)
    return (slots + 0.5) * stride, valid


def over_real_keys(probs: torch.Tensor, k_valid: torch.Tensor) -> torch.Tensor:
    """``probs`` (``*lead x heads x Nq x Nk``) without the keys where ``k_valid``
    (``*lead' x Nk``) is False, each query's weights over the other keys renormalised to
    sum to 1."""
    probs = probs * k_valid[..., None, None, :].to(probs.dtype)
    return probs / probs.sum(-1, keepdim=True).clamp_min(1e-12)


def mean_attention_distance(probs: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
                            q_valid: Optional[torch.Tensor] = None,
                            k_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per head (``heads``): the mean over queries (and every leading dim) of
    ``sum_k p(q, k) |pos(q) - pos(k)|``. ``probs``: ``*lead x heads x Nq x Nk``; positions
    ``*lead' x N x 2`` broadcasting against ``lead``; ``q_valid`` ``*lead' x Nq``;
    ``k_valid`` ``*lead' x Nk``: keys left out, the weights renormalised over the others
    (:func:`over_real_keys`)."""
    if k_valid is not None:
        probs = over_real_keys(probs.double(), k_valid)
    dist = torch.cdist(q_pos.double(), k_pos.double())  # *lead' x Nq x Nk
    heads = probs.shape[-3]
    # head by head: a double copy of one head's maps at a time, not of all of them
    per_query = torch.stack([(probs[..., h, :, :].double() * dist).sum(-1)
                             for h in range(heads)], -2)  # *lead x heads x Nq
    per_query = per_query.movedim(-2, -1)  # *lead x Nq x heads
    if q_valid is None:
        return per_query.reshape(-1, heads).mean(0)
    weight = q_valid.to(per_query.dtype).unsqueeze(-1).expand(per_query.shape)
    return (per_query * weight).reshape(-1, heads).sum(0) / weight.reshape(-1, heads).sum(0)


def _renormalised(probs: torch.Tensor, prefix: int) -> torch.Tensor:
    probs = probs[..., prefix:, prefix:]
    return probs / probs.sum(-1, keepdim=True).clamp_min(1e-12)


def backbone_kind(backbone: nn.Module) -> str:
    name = type(backbone).__name__
    kinds = {'ViT': 'vit', 'SwinTransformer': 'swin', 'CvT': 'cvt'}
    if name not in kinds:
        raise ValueError(f'attention analysis covers mmvtx.ViT, mmvtx.SwinTransformer and '
                         f'mmvtx.CvT; got {name}')
    return kinds[name]


def _layer_strides(backbone: nn.Module) -> dict:
    """Attention module name -> (kind, stride in pixels of its query grid)."""
    kind = backbone_kind(backbone)
    out = {}
    if kind == 'vit':
        for i, layer in enumerate(backbone.blocks):
            out[f"blocks.{i}.attn"] = ('vit', backbone.patch_size)
    elif kind == 'swin':
        p = backbone.patch_embed.patch_size
        for i, stage in enumerate(backbone.stages):
            for j, _ in enumerate(stage.blocks):
                out[f'stages.{i}.blocks.{j}.attn'] = ('swin', p * 2 ** i)
    else:
        stride = 1
        for i, stage in enumerate(backbone.stages):
            stride *= backbone.patch_strides[i]
            for j, _ in enumerate(stage.blocks):
                out[f'stages.{i}.blocks.{j}.attn'] = ('cvt', stride)
    return out


class _StreamingRecorder(AttentionRecorder):
    """Hands every call, with its positions, to ``on_call`` as it is made and keeps only what
    ``on_call`` returns: the probabilities of one call are alive at a time."""

    def __init__(self, strides: dict, on_call: Callable[[AttentionCall], Any]):
        super().__init__()
        self.strides, self.on_call, self.results = strides, on_call, []

    def add(self, *args):
        super().add(*args)
        (name, module, call_args, call_kwargs), probs = self.calls.pop()
        kind, stride = self.strides[name]
        call = _positions(name, kind, stride, module, call_args, call_kwargs, probs)
        del probs
        self.results.append(self.on_call(call))


def record_attention(backbone: nn.Module, images: torch.Tensor,
                     on_call: Optional[Callable[[AttentionCall], Any]] = None) -> list:
    """Runs ``backbone`` (eval mode, no grad) on ``images`` (``B x 3 x H x W``, normalised) and
    returns every attention call with the pixel positions of its queries and keys; with
    ``on_call``, what ``on_call`` returns for each call, in call order, each call's
    probabilities dropped as soon as it returns (the memory of one layer's attention maps, not
    of all of them: ViT-B's twelve global layers at 1024 px hold 9.7 GB of maps)."""
    strides = _layer_strides(backbone)
    modules = dict(backbone.named_modules())
    missing = [n for n in strides if n not in modules]
    if missing:
        raise RuntimeError(f'{type(backbone).__name__} has no attention module {missing[0]}')
    handles = []
    recorder = AttentionRecorder() if on_call is None else _StreamingRecorder(strides, on_call)

    def pre_hook(name):
        def hook(module, args, kwargs):
            recorder.context = (name, module, args, kwargs)
        return hook

    for name in strides:
        handles.append(modules[name].register_forward_pre_hook(pre_hook(name), with_kwargs=True))
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad(), recorder:
            backbone(images)
    finally:
        for h in handles:
            h.remove()
        backbone.train(was_training)
        recorder.context = None  # the last block's inputs
    if on_call is not None:
        return recorder.results
    calls = []
    for (name, module, args, kwargs), probs in recorder.calls:
        kind, stride = strides[name]
        calls.append(_positions(name, kind, stride, module, args, kwargs, probs))
    return calls


def _positions(name, kind, stride, module, args, kwargs, probs) -> AttentionCall:
    x = args[0]
    if kind == 'swin':
        geo = args[1] if len(args) > 1 else kwargs['geo']
        B, H, W, _ = x.shape
        shift = geo.shift_size if module.shifted else 0
        pos, valid = window_slot_positions(H, W, geo.window_size, shift, stride)
        return AttentionCall(name, kind, over_real_keys(probs, valid), pos, pos, valid, stride,
                             stride)
    if kind == 'vit':
        geo = args[1] if len(args) > 1 else kwargs.get('geo')
        h, w = args[2] if len(args) > 2 else kwargs['hw']
        if geo is not None:  # ViTDet's window blocks: B*nW windows
            pos, valid = window_slot_positions(h, w, geo.window_size, 0, stride)
            probs = over_real_keys(probs.unflatten(0, (-1, pos.shape[0])), valid)
            return AttentionCall(name, kind, probs, pos, pos, valid, stride, stride)
        prefix = probs.shape[-1] - h * w
        pos = grid_positions(h, w, stride)
        return AttentionCall(name, kind, _renormalised(probs, prefix), pos, pos, None, stride,
                             stride)
    # cvt
    h, w = args[1] if len(args) > 1 else kwargs['hw']
    num_cls = args[2] if len(args) > 2 else kwargs['num_cls']
    kh, kw = -(-h // 2), -(-w // 2)
    if probs.shape[-1] - num_cls != kh * kw:
        raise RuntimeError(f'{name}: {probs.shape[-1] - num_cls} keys, expected {kh}x{kw}')
    return AttentionCall(name, kind, _renormalised(probs, num_cls), grid_positions(h, w, stride),
                         grid_positions(kh, kw, stride, step=2), None, stride, 2 * stride)


def attention_distances(calls: List[AttentionCall]) -> List[Tuple[str, int, torch.Tensor]]:
    """``(layer name, layer index, per-head mean distance in pixels)`` for every call, in
    call order."""
    return [(c.layer, i, mean_attention_distance(c.probs, c.q_pos, c.k_pos, c.q_valid))
            for i, c in enumerate(calls)]


def build_backbone(config: str, checkpoint=None, cfg_options=None):
    """The backbone of ``config`` (a detector's or segmentor's ``model.backbone``, or the model
    itself), with ``checkpoint``'s weights, and the config. The checkpoint may be a whole
    model's (mmengine's layout, ``backbone.`` cut, a DDP ``module.`` prefix allowed), the
    backbone's alone (``tools/model_converters/*2mmvtx.py``) or a released backbone in any
    layout the backbone converts (timm, the authors', transformers):
    :func:`~mmvtx.utils.load_backbone_checkpoint`, strict. A backbone weight missing from it,
    one it has that the backbone does not (a bigger model's checkpoint) or one of another
    shape is refused, naming the keys. ``cfg_options``: ``--cfg-options``' dict, merged into
    the config before the model is built (``model.backbone.window_size=12``...)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    import mmvtx  # noqa: F401  registers the backbones
    from mmvtx.engine.safe_load import allow_mmengine_checkpoints
    from mmvtx.utils.checkpoint import CheckpointMismatchError, load_backbone_checkpoint
    from mmvtx.utils.cli import config_path
    cfg = Config.fromfile(config_path(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmdet')):
        model = MODELS.build(cfg.model)
    backbone = getattr(model, 'backbone', model)
    if checkpoint:
        allow_mmengine_checkpoints()  # a training checkpoint's meta (message hub)
        try:
            load_backbone_checkpoint(backbone, checkpoint)
        except CheckpointMismatchError as e:
            raise CheckpointMismatchError(
                f'{checkpoint} does not fit the backbone of {config}: {e}') from e
    backbone.eval()  # not chained: mmdet's ResNet (and others) return None from train()
    return backbone, cfg


def build_backbone_for_tool(parser, config: str, checkpoint=None,
                            flags=('config', 'checkpoint'), cfg_options=None):
    """:func:`build_backbone` for an analysis tool: a config or checkpoint that is no file, and
    a checkpoint that does not fit the backbone, are refused with ``parser.error`` naming the
    value (``flags``: how the tool's options are called), as argparse refuses a bad flag,
    instead of a traceback. ``cfg_options``: see :func:`build_backbone`; a value the model
    refuses is named with ``--cfg-options``."""
    import os.path as osp

    from mmvtx.utils.checkpoint import CheckpointMismatchError
    if not osp.isfile(config):
        parser.error(f'{flags[0]} {config}: no such file')
    if checkpoint and '://' not in checkpoint and not osp.isfile(checkpoint):
        parser.error(f'{flags[1]} {checkpoint}: no such file')
    try:
        return build_backbone(config, checkpoint, cfg_options)
    except CheckpointMismatchError as e:
        parser.error(f'{flags[1]} {e}')
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        if not cfg_options:
            raise
        # a key or value of --cfg-options the model does not take: named as a bad flag
        given = ' '.join(f'{k}={v}' for k, v in cfg_options.items())
        parser.error(f'--cfg-options {given}: the model of {config} cannot be built with it: '
                     f'{type(e).__name__}: {e}')
