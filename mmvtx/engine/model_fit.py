"""Refuse a model whose neck or decode head does not take what the backbone returns.

Changing a backbone's ``out_indices``, preset or width without its neck's ``in_channels`` (a
common ``--cfg-options`` edit) otherwise fails inside the first forward: mmdet's FPN with a bare
``assert len(inputs) == len(self.in_channels)`` (an empty ``AssertionError``), a convolution
with a shape message that names neither setting, or mmseg's ``in_index`` with an
``IndexError``. :class:`BackboneFitHook` (which ``tools/train.py`` and ``tools/test.py`` add)
checks the built model before the run starts and names both settings and the values that fit.

Checked for mmvtx's backbones (their ``out_channels``):

* the neck, where its ``in_channels`` is a list: mmdet's and mmseg's FPN-like necks (FPN and
  its subclasses, HRFPN, SSH, NAS-FCOS's, MLANeck, JPU...) take every returned map, in order, so
  the list must equal the backbone's channels (mmdet's ``ChannelMapper``, the DETR family's
  neck, keeps no ``in_channels``: they are read from its input convolutions; its ``YOLOV3Neck``
  takes them deepest first: the list reversed; its ``SSDNeck`` keeps none either: its L2 norm,
  its first extra level and the SSD head's ``in_channels`` say what it takes, and the advice
  names its ``out_channels`` and the head's, which change with it). For necks not known to take
  every map a mismatch is a warning;
* necks whose ``in_channels`` is an int: YOLOF's ``DilatedEncoder`` and CenterNet's
  ``CTResNetNeck`` read the last map alone (its width); Libra R-CNN's ``BFP`` and ``DyHead``
  take every map at that width (``BFP`` asserts ``num_levels`` of them);
* a config's list of necks (an ``nn.Sequential``: Libra R-CNN's FPN + BFP, ATSS's FPN +
  DyHead): each neck against what the one before returns (mmdet checks none of it), as far as
  the outputs of the necks before are known;
* the heads against what the last neck returns, where that is known: mmseg's decode and
  auxiliary heads (Semantic FPN's FPNHead after its FPN, FastFCN's heads after JPU: it passes
  on all but the last map it takes, then its own), mmdet's SSD/YOLOv3 heads' lists, and, where
  the neck's maps are of one width, mmdet's dense and RPN heads' ``in_channels`` and the RoI
  heads' extractors' ``out_channels`` and bbox/mask heads' ``in_channels`` (a neck's
  out_channels changed alone);
* the strides of the neck's maps (mmdet's FPN and its kind from ``start_level`` on, then its
  extra levels at twice the stride each; ChannelMapper, the PAFPNs, BFP, DyHead keep the
  backbone's) against those mmdet's dense and RPN heads place their priors at (their
  ``strides`` or ``anchor_generator.strides``) and its RoI extractors' ``featmap_strides``: an
  FPN that keeps the R-50 recipe's ``start_level=1`` after ``out_indices`` dropped the stride-4
  level returns maps at twice the strides the anchors assume, and training runs on without a
  word. Where another ``start_level`` fits, the advice names it;
* without a neck, mmseg's decode and auxiliary heads (and mmdet's MaskFormer/Mask2Former
  ``panoptic_head``) against the backbone: ``in_index`` within the returned maps and
  ``in_channels`` equal to the channels it selects (for ``resize_concat`` the list of them,
  which mmseg sums), DeepLabV3+'s ``c1_in_channels`` equal to the first map's, and the
  ``in_channels`` of MaskFormer/Mask2Former heads (their pixel decoder's) equal to the
  backbone's channels; a returned [CLS] token (``output_cls_token``) is not a map. K-Net's
  ``IterativeDecodeHead`` by its kernel generating head; mmseg's ``DPTHead`` (it takes (map,
  [CLS] token) pairs of stride-16 maps) is refused on mmvtx's maps.

Maps the model never reads (an FPN with the R-50 recipes' ``start_level=1``; mmseg's FCN,
PSPNet, DeepLabV3+ heads, which read one or two maps) leave the backbone's parameters that only
they pass through (Swin's output norms, ViT's pyramid levels, CvT's ``out_norms``) without a
gradient: DDP without ``find_unused_parameters`` stops at the second iteration. The hook refuses
to train such a model under DDP (``before_train``: a test run computes no gradients) and warns
otherwise, naming the ``out_indices`` of the maps read and the
neck's or heads' settings that go with them (:func:`unread_maps_message`).

mmseg's ``MultiLevelNeck`` (its ViT recipes) and ``Feature2Pyramid`` (BEiT/MAE) rescale
stride-16 maps into a pyramid: on mmvtx's maps, already at strides 4..32, the message (or,
where the neck runs, a warning) says to remove it (or set MultiLevelNeck's scales to 1).
mmseg's ``MLANeck`` (SETR-MLA) adds its maps together: maps at several strides are refused.
"""
import logging
from typing import List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from torch import nn

from mmvtx.engine._model import unwrap_model
from mmvtx.registry import HOOKS

# necks that take every map the backbone returns, in order, with in_channels[i] channels
# (FPN's subclasses, e.g. FPN_DropBlock, too); each of these asserts the count or reads
# in_channels[i] channels from map i, so another list fails in the first forward
EVERY_MAP_NECKS = ('FPN', 'PAFPN', 'ChannelMapper', 'NASFPN', 'MultiLevelNeck', 'CSPNeXtPAFPN',
                   'YOLOXPAFPN', 'SSDNeck', 'ICNeck', 'YOLOV3Neck', 'HRFPN', 'SSH', 'FPN_CARAFE',
                   'NASFCOS_FPN', 'FPG', 'MLANeck', 'JPU')
# necks whose in_channels list the maps deepest first (in_channels[0] is the last map's)
REVERSED_NECKS = ('YOLOV3Neck',)
# necks that read the last map only, of in_channels (an int) channels: YOLOF's, CenterNet's
LAST_MAP_NECKS = ('DilatedEncoder', 'CTResNetNeck')
# necks that take every map, each of in_channels (an int) channels: Libra R-CNN's BFP (which
# asserts num_levels maps), DyHead
SAME_WIDTH_NECKS = ('BFP', 'DyHead')


def _conv_in(module: nn.Module):
    """Input channels of a convolution, or of mmcv's ``ConvModule`` around one."""
    return getattr(getattr(module, 'conv', module), 'in_channels', None)


def _neck_in_channels(neck: nn.Module):
    """The neck's ``in_channels`` (one entry per map it takes, in the order of its config)."""
    in_channels = getattr(neck, 'in_channels', None)
    if in_channels is None and type(neck).__name__ == 'ChannelMapper':
        # mmdet's ChannelMapper keeps no in_channels: one input convolution per map it takes
        widths = [_conv_in(c) for c in getattr(neck, 'convs', ())]
        if widths and None not in widths:
            in_channels = widths
    return in_channels


def _cls_token(backbone: nn.Module) -> bool:
    """Whether the backbone returns its [CLS] token (``B x C``) after the maps."""
    return getattr(backbone, 'output_cls_token', False) is True and not _cls_pairs(backbone)


def _cls_pairs(backbone: nn.Module) -> bool:
    """Whether each output is a ``[map, [CLS] token]`` pair (a ViT built from mmseg's
    VisionTransformer config with ``output_cls_token=True``: DPT's input)."""
    return getattr(backbone, 'output_cls_token', False) is True and \
        getattr(backbone, 'layer_maps', False) is True


def _written_out_indices(backbone: nn.Module) -> tuple:
    """``out_indices`` as the config writes them: pyramid levels, or the encoder layers of a
    ViT built from mmseg's VisionTransformer config."""
    if getattr(backbone, 'layer_maps', False) is True:
        return tuple(backbone.feature_layers)
    return tuple(backbone.out_indices)


def _backbone_desc(backbone: nn.Module) -> str:
    return (f'model.backbone ({type(backbone).__name__}, out_indices='
            f'{_written_out_indices(backbone)}) returns {len(backbone.out_channels)} maps with '
            f'{list(backbone.out_channels)} channels' +
            (' and then its [CLS] token (B x C, output_cls_token=True)'
             if _cls_token(backbone) else
             ", each with its layer's [CLS] token" if _cls_pairs(backbone) else ''))


def _pixel_decoder_widths(decoder: nn.Module):
    """The ``in_channels`` list a MaskFormer/Mask2Former pixel decoder was built with (one per
    backbone map, in order), read from its input convolutions; ``None`` for other modules."""
    lateral = getattr(decoder, 'lateral_convs', None)
    if lateral is None:
        return None
    if hasattr(decoder, 'input_convs'):  # mmdet's MSDeformAttnPixelDecoder: both top-down
        widths = [_conv_in(m) for m in reversed(lateral)] + \
                 [_conv_in(m) for m in reversed(decoder.input_convs)]
    else:  # mmdet's PixelDecoder, TransformerEncoderPixelDecoder: the last map on its own
        last = getattr(decoder, 'encoder_in_proj', None) or getattr(decoder, 'last_feat_conv',
                                                                     None)
        if last is None:
            return None
        widths = [_conv_in(m) for m in lateral] + [_conv_in(last)]
    return None if None in widths else widths


def _head_errors(name: str, head: nn.Module, channels: List[int], desc: str,
                 cls_token: bool = False, cls_pairs: bool = False) -> List[str]:
    inner = getattr(head, 'kernel_generate_head', None)
    if isinstance(inner, nn.Module):
        # mmseg's K-Net: IterativeDecodeHead keeps no in_channels/in_index; its kernel
        # generating head (e.g. UPerHead) reads the maps
        return _head_errors(f'{name}.kernel_generate_head', inner, channels, desc, cls_token,
                            cls_pairs)
    if cls_pairs and type(head).__name__ != 'DPTHead':
        return [f'model.{name} ({type(head).__name__}) reads maps, but {desc} as (map, [CLS] '
                'token) pairs (output_cls_token=True, for DPTHead): set '
                'backbone.output_cls_token=False']
    if type(head).__name__ == 'DPTHead' and not cls_pairs:
        # mmseg's DPT: its reassemble blocks unpack each input as (map, [CLS] token) and resize
        # the maps, all at stride 16, into a pyramid: an in_channels fix alone then failed with
        # an empty AssertionError in the first forward
        return [f'model.{name} (DPTHead) takes a (map, [CLS] token) pair per level, each map at '
                f'stride 16 (mmseg\'s ViT with output_cls_token=True), which it resizes into a '
                f'pyramid; {desc}, maps already at strides 4..32: use a head made for a pyramid '
                f'of maps (e.g. UPerHead with {name}.in_channels={channels})']
    decoder = getattr(head, 'pixel_decoder', None)
    widths = _pixel_decoder_widths(decoder) if decoder is not None else None
    if widths is not None and cls_token and not hasattr(decoder, 'input_convs'):
        return [f'model.{name} ({type(head).__name__}) reads the last output as a map, here the '
                f'[CLS] token: {desc}: set backbone.output_cls_token=False']
    if widths is not None and widths != channels:
        # mmseg's MaskFormer/Mask2Former heads: every map, in order, into the pixel decoder
        return [f'model.{name}.in_channels={widths} ({type(head).__name__}, read by its '
                f'{type(decoder).__name__}) but {desc}: set {name}.in_channels={channels}']
    in_index, in_channels = getattr(head, 'in_index', None), getattr(head, 'in_channels', None)
    if in_index is None or in_channels is None:
        return []
    indices = list(in_index) if isinstance(in_index, (list, tuple)) else [in_index]
    n = len(channels) + cls_token  # the [CLS] token, where returned, comes last
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        return [f'model.{name}.in_index={in_index!r} selects maps {bad} that do not exist: '
                f'{desc}']
    token = [i for i in indices if i % n == len(channels)]
    if token:
        return [f'model.{name}.in_index={in_index!r} selects the [CLS] token ({token}), not a '
                f'map: {desc}: select the maps by 0..{len(channels) - 1} (or set '
                'backbone.output_cls_token=False)']
    picked = [channels[i % n] for i in indices]
    errors = _c1_errors(name, head, channels, desc)
    transform = getattr(head, 'input_transform', None)
    if transform == 'resize_concat':
        # mmseg takes a list (one width per selected map) and keeps its sum: the list is what
        # the config must say (an int there fails mmseg's assertion)
        if in_channels != sum(picked):
            errors.append(
                f'model.{name}.in_channels (summed by resize_concat to {in_channels!r}) but the '
                f'maps its in_index={in_index!r} selects have {picked!r} channels '
                f'({sum(picked)} in all): {desc}: set {name}.in_channels={picked!r}')
        return errors
    elif transform == 'multiple_select' or isinstance(in_index, (list, tuple)):
        want = picked
        have = list(in_channels) if isinstance(in_channels, (list, tuple)) else in_channels
    else:
        want, have = picked[0], in_channels
    if have != want:
        # a single map of the head's width elsewhere (e.g. JPU's own output, last): maybe the
        # index is what is off
        other = [j for j, c in enumerate(channels) if c == have] if isinstance(have, int) else []
        hint = (f' (or {name}.in_index={other[0]}, the map of {have} channels)'
                if len(other) == 1 else '')
        errors.append(f'model.{name}.in_channels={have!r} but the maps its in_index='
                      f'{in_index!r} selects have {want!r} channels: {desc}: set '
                      f'{name}.in_channels={want!r}{hint}')
    return errors


def _c1_errors(name: str, head: nn.Module, channels: List[int], desc: str) -> List[str]:
    """DeepLabV3+'s head (``DepthwiseSeparableASPPHead``) reads its low-level ``c1`` branch from
    the first map the backbone returns, whatever its ``in_index``."""
    c1_in = _conv_in(getattr(head, 'c1_bottleneck', None))
    if c1_in is None or c1_in == channels[0]:
        return []
    return [f'model.{name}.c1_in_channels={c1_in} but its c1 branch reads the first map the '
            f'backbone returns, of {channels[0]} channels: {desc}: set '
            f'{name}.c1_in_channels={channels[0]}']


def _level_strides(backbone: nn.Module) -> List[int]:
    """The strides of the maps an mmvtx backbone returns (level ``i`` at ``4 * 2 ** i``; the
    patch size for each map of a ViT built from mmseg's VisionTransformer config)."""
    return list(backbone.out_strides)


def _rescaling_neck(neck: nn.Module, backbone: nn.Module) -> str:
    """mmseg's ``MultiLevelNeck`` (its ViT recipes) resizes each map by ``scales``
    (``[4, 2, 1, 0.5]``), made for mmseg's ViT whose outputs are all at stride 16; mmvtx's maps
    are already at strides 4..32. What to do instead ('' where the scales are all 1, or where
    the backbone returns one map, from which the neck builds the pyramid as in mmseg)."""
    kind = type(neck).__name__
    scales = getattr(neck, dict(MultiLevelNeck='scales', Feature2Pyramid='rescales').get(kind, ''),
                     None)
    if not isinstance(scales, (list, tuple)) or all(s == 1 for s in scales):
        return ''
    strides = _level_strides(backbone)
    if len(set(strides)) == 1:  # one map: the neck builds the pyramid from it, as in mmseg
        return ''
    after = [int(st / sc) if st / sc == int(st / sc) else st / sc
             for st, sc in zip(strides, scales)]
    if kind == 'Feature2Pyramid':
        return (f'model.neck (Feature2Pyramid, rescales={list(scales)}) resizes maps that are '
                f'all at stride 16 (mmseg\'s BEiT/MAE) into a pyramid; '
                f'{type(backbone).__name__}\'s maps are already at strides {strides}, which it '
                f'would turn into strides {after}: remove the neck (model.neck='
                f'None, the heads\' in_channels set to {list(backbone.out_channels)})')
    return (f'model.neck (MultiLevelNeck, scales={list(scales)}) resizes maps that are all '
            f'at stride 16 (mmseg\'s ViT) into a pyramid; {type(backbone).__name__}\'s maps are '
            f'already at strides {strides}, which it would turn into strides {after}: remove '
            f'the neck (model.neck=None, the heads\' in_channels set to '
            f'{list(backbone.out_channels)}) or keep it with neck.in_channels='
            f'{list(backbone.out_channels)} and neck.scales={[1] * len(scales)}')


def _feature2pyramid_fails(neck: nn.Module, channels: List[int]) -> bool:
    """Whether mmseg's ``Feature2Pyramid`` fails on these maps: one per rescale, and its
    transposed convolutions (the upsampling levels) take ``embed_dim`` channels."""
    if len(channels) != len(neck.rescales):
        return True
    ops = [getattr(neck, n, None) for n in ('upsample_4x', 'upsample_2x')]
    ops = [op for op in ops if op is not None]
    for op, c in zip(ops, channels):
        conv = next((m for m in op.modules() if isinstance(m, nn.ConvTranspose2d)), None)
        if conv is not None and conv.in_channels != c:
            return True
    return False


def _family(neck: nn.Module) -> List[str]:
    """The class names of the neck and its bases (mmdet's FPN_DropBlock is an FPN)."""
    return [c.__name__ for c in type(neck).__mro__]


def _int_in_channels(neck: nn.Module):
    """The ``in_channels`` (an int) of necks that take one width; ``None`` for others.
    mmdet's CTResNetNeck overwrites its ``in_channels`` with its last deconv's width: its first
    convolution says what it takes."""
    if type(neck).__name__ == 'CTResNetNeck':
        layers = getattr(neck, 'deconv_layers', None)
        return _conv_in(layers[0]) if layers is not None and len(layers) else None
    in_channels = getattr(neck, 'in_channels', None)
    return in_channels if isinstance(in_channels, int) else None


def _last_conv_out(module: nn.Module):
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels if convs else None


def _ssd_in_channels(neck: nn.Module, model: nn.Module):
    """mmdet's SSDNeck keeps no ``in_channels``: its L2 norm (where set) is of the first map's
    width and its first extra level reads the last map; how many maps it takes is read from the
    SSD head's ``in_channels`` (the neck's ``out_channels``: the maps, then one per extra level),
    where they agree. Returns (in_channels or None, first width or None, last width, extras)."""
    extras = [_last_conv_out(layer) for layer in neck.extra_layers]
    first = neck.l2_norm.weight.numel() if hasattr(neck, 'l2_norm') else None
    last = _conv_in(next((m for m in neck.extra_layers[0].modules()
                          if isinstance(m, nn.Conv2d)), None)) if extras else None
    head_in = getattr(getattr(model, 'bbox_head', None), 'in_channels', None)
    in_channels = None
    if isinstance(head_in, (list, tuple)) and len(head_in) > len(extras):
        took = list(head_in[:len(head_in) - len(extras)])
        if first in (None, took[0]) and last in (None, took[-1]) and \
                list(head_in[len(took):]) == extras:
            in_channels = took
    return in_channels, first, last, extras


def _neck_out(neck: nn.Module, channels: List[int]):
    """The widths of the maps a neck returns when given maps of ``channels`` widths (``None``
    where not known: the necks after it are then not checked)."""
    kind, family = type(neck).__name__, _family(neck)
    out, num_outs = getattr(neck, 'out_channels', None), getattr(neck, 'num_outs', None)
    if kind == 'ChannelMapper':
        width = _last_conv_out(neck.convs[0]) if len(neck.convs) else None
        n = len(neck.convs) + len(neck.extra_convs or ())
        return [width] * n if width is not None else None
    if kind == 'SSDNeck':
        return list(channels) + [_last_conv_out(layer) for layer in neck.extra_layers]
    if kind == 'BFP':
        return [neck.in_channels] * neck.num_levels
    if kind == 'DyHead':
        return [out] * len(channels)
    if kind == 'DilatedEncoder':
        return [out]
    if kind == 'CTResNetNeck':
        return [neck.in_channels]  # overwritten with its last deconv's width
    if kind == 'JPU':  # the maps it passes on (all but the last it takes), then its own
        return list(channels[neck.start_level:neck.backbone_end_level - 1]) + [
            neck.mid_channels * len(neck.dilations)]
    if kind in ('CSPNeXtPAFPN', 'YOLOXPAFPN', 'MLANeck'):
        return [out] * len(channels)
    if kind in ('YOLOV3Neck', 'SSH') and isinstance(out, (list, tuple)):
        return list(out)
    if isinstance(out, int) and isinstance(num_outs, int) and (
            set(family) & {'FPN', 'PAFPN', 'NASFPN', 'FPN_CARAFE', 'HRFPN', 'FPG',
                           'NASFCOS_FPN', 'MultiLevelNeck'}):
        return [out] * num_outs
    return None


def _fpn_like(neck: nn.Module) -> bool:
    """mmdet's FPN and its kind: the maps from ``start_level`` on, then extra levels."""
    return bool(set(_family(neck)) & {'FPN', 'PAFPN', 'FPN_CARAFE'}) and all(
        isinstance(getattr(neck, k, None), int)
        for k in ('start_level', 'backbone_end_level', 'num_outs'))


def _neck_strides(neck: nn.Module, strides: List[int], start_level: Optional[int] = None,
                  end_level: Optional[int] = None):
    """The strides of the maps a neck returns when given maps at ``strides`` (``None`` where
    not known); ``start_level``, ``end_level``: in place of an FPN's own ``start_level`` and
    ``backbone_end_level``. FPN and its kind return the maps from ``start_level`` to
    ``backbone_end_level``, then each extra level (a convolution or a max-pool of stride 2) at
    twice the stride of the one before, up to ``num_outs``."""
    kind = type(neck).__name__
    if kind == 'ChannelMapper':
        out = list(strides[:len(neck.convs)])
        extras = len(neck.extra_convs or ())
    elif _fpn_like(neck):
        start = neck.start_level if start_level is None else start_level
        end = neck.backbone_end_level if end_level is None else end_level
        out = list(strides[start:end])
        extras = neck.num_outs - len(out)
    elif kind in ('YOLOXPAFPN', 'CSPNeXtPAFPN', 'BFP', 'DyHead'):
        return list(strides)
    else:
        return None
    for _ in range(extras):
        out.append(out[-1] * 2 if out else None)
    return out if out and None not in out else None


def _start_level_hint(name: str, neck: nn.Module, backbone: Optional[nn.Module],
                      model: nn.Module) -> str:
    """With its in_channels set to the backbone's maps, the ``start_level`` an FPN needs for
    its maps to be at the strides the heads place priors at (mmdet's RetinaNet/FCOS/ATSS keep
    1, which skips a map the backbone no longer returns when its out_indices start at 1)."""
    if backbone is None or not _fpn_like(neck) or neck.end_level != -1:
        return ''
    heads = _head_strides(model)
    levels = _level_strides(backbone)

    def fits(start):  # the neck's maps once its in_channels are the backbone's (end_level -1)
        return _priors_fit(_neck_strides(neck, levels, start, len(levels)), heads)

    if not heads or fits(neck.start_level):
        return ''
    starts = [s for s in range(len(levels)) if fits(s)]
    return f' and {name}.start_level={starts[0]}' if starts else ''


def _head_strides(model: nn.Module):
    """mmdet's heads that place priors (or pool RoIs) at the strides of the neck's maps:
    ``(config key, head type, strides, how many maps it takes)``; a dense head takes every
    map (its prior generator asserts the count), a RoI extractor the first ones."""
    found = []
    for name in ('rpn_head', 'bbox_head'):
        for path, head in _named(name, getattr(model, name, None)):
            strides = getattr(getattr(head, 'prior_generator', None), 'strides', None)
            if not isinstance(strides, (list, tuple)) or not strides:
                continue
            strides = [s[0] if isinstance(s, (list, tuple)) else s for s in strides]
            key = next((k for k in ('strides', 'point_strides')  # RepPoints': point_strides
                        if isinstance(getattr(head, k, None), (list, tuple))),
                       'anchor_generator.strides')
            found.append((f'{path}.{key}', type(head).__name__, strides, None))
    roi_head = getattr(model, 'roi_head', None)
    for part in ('bbox_roi_extractor', 'mask_roi_extractor'):
        for path, extractor in _named(f'roi_head.{part}', getattr(roi_head, part, None)):
            strides = getattr(extractor, 'featmap_strides', None)
            if isinstance(strides, (list, tuple)) and strides:
                found.append((f'{path}.featmap_strides', type(extractor).__name__,
                              list(strides), len(strides)))
    return found


def _strides_fit(have: List[int], want: List[int], count: Optional[int]) -> bool:
    """Whether maps at strides ``have`` are those a head expects (``want``; its ``count``
    first maps, ``None``: every map)."""
    return have[:count] == want if count else have == want


def _priors_fit(have: Optional[List[int]], heads) -> bool:
    """Whether maps at strides ``have`` fit every head of :func:`_head_strides`."""
    return have is not None and all(_strides_fit(have, want, count)
                                    for _, _, want, count in heads)


def _stride_errors(model: nn.Module, chain: List[nn.Module], names: List[str],
                   backbone: nn.Module) -> List[str]:
    """The heads' priors and RoI extractors against the strides of the maps the neck returns.
    An FPN keeps its ``start_level`` (1 in mmdet's RetinaNet, FCOS, ATSS recipes: it skips
    ResNet's stride-4 map) when the backbone's ``out_indices`` drop that level: its maps are
    then at twice the strides the anchors are placed at, and training ran on without a word."""
    def chain_strides(start_level=None):
        strides = _level_strides(backbone)
        for i, part in enumerate(chain):
            strides = _neck_strides(part, strides, start_level if i == 0 else None)
            if strides is None:
                return None
        return strides

    strides = chain_strides()
    heads = _head_strides(model)
    if strides is None or not heads:
        return []

    bad = [h for h in heads if not _strides_fit(strides, h[2], h[3])]
    if not bad:
        return []
    first = chain[0]
    desc = (f'model.{names[-1]} ({type(chain[-1]).__name__}) returns maps at strides {strides}'
            f'; {_backbone_desc(backbone)}, at strides '
            f'{_level_strides(backbone)}')
    fix = ''
    if _fpn_like(first):
        start = first.start_level
        starts = [s for s in range(len(backbone.out_indices))
                  if s != start and _priors_fit(chain_strides(s), heads)]
        if starts:
            fix = (f'set {names[0]}.start_level={starts[0]} (it is {start}: the neck skips the '
                   f'first {start} map(s) the backbone returns)')
    errors = []
    for key, kind, want, count in bad:
        have = strides[:count] if count else strides
        todo = fix or (f'set {key}={have} (or the backbone\'s out_indices to the levels the '
                       'heads expect)')
        errors.append(f'model.{key}={want} ({kind}) but {desc}: {todo}')
    return errors


def _neck_errors(name: str, neck: nn.Module, channels: List[int], desc: str, cls_token: bool,
                 backbone: nn.Module, model: nn.Module, other: str) -> List[str]:
    """What does not fit between a neck (``name``: 'neck' or 'neck[i]') and the maps of
    ``channels`` widths it is given (described by ``desc``; ``other``: the other fix, on what
    gives them)."""
    kind = type(neck).__name__
    every_map = bool(set(_family(neck)) & set(EVERY_MAP_NECKS))
    in_channels = _neck_in_channels(neck)
    int_in = _int_in_channels(neck)
    if cls_token and (every_map or kind in ('Feature2Pyramid',) + SAME_WIDTH_NECKS):
        return [f'model.{name} ({kind}) takes every output of the backbone as a map: {desc}: '
                'set backbone.output_cls_token=False']
    if cls_token and kind in LAST_MAP_NECKS:
        return [f'model.{name} ({kind}) reads the last output as a map, here the [CLS] token: '
                f'{desc}: set backbone.output_cls_token=False']
    if kind in LAST_MAP_NECKS and int_in is not None:
        # YOLOF's DilatedEncoder, CenterNet's CTResNetNeck: feats[-1] alone, whatever the rest
        if int_in == channels[-1]:
            return []
        return [f'model.{name}.in_channels={int_in} ({kind}, reads the last map only) but '
                f'{desc}: set {name}.in_channels={channels[-1]}']
    if kind in SAME_WIDTH_NECKS and int_in is not None:
        # Libra R-CNN's BFP (asserts num_levels maps), DyHead: every map of in_channels
        levels = getattr(neck, 'num_levels', None)
        count = levels is not None and levels != len(channels)
        if not count and all(c == int_in for c in channels):
            return []
        widths = sorted(set(channels))
        if len(widths) > 1:
            fix = (f'its maps are of {len(widths)} widths: put a neck that maps them to one '
                   f'width before it (e.g. an FPN), with out_channels={int_in}')
        elif widths[0] != int_in:
            fix = f'set {name}.in_channels={widths[0]}'
        else:
            fix = ''
        if count:
            fix += (' and ' if fix else 'set ') + f'{name}.num_levels={len(channels)}'
            if getattr(neck, 'refine_level', 0) >= len(channels):  # BFP asserts it is below
                fix += f' (and {name}.refine_level below {len(channels)})'
        levels_desc = f', num_levels={levels}' if levels is not None else ''
        return [f'model.{name}.in_channels={int_in} ({kind}{levels_desc}, takes every map, '
                f'each of in_channels channels) but {desc}: {fix}']
    if kind == 'SSDNeck':
        return _ssd_errors(name, neck, channels, desc, model, other)
    if kind == 'MLANeck' and backbone is not None:
        strides = _level_strides(backbone)
        if len(set(strides)) > 1:
            # SETR-MLA: it adds its maps together, all at stride 16 from mmseg's ViT (a tensor
            # size message in the first forward, whatever in_channels says)
            return [f'model.{name} (MLANeck) adds the maps together, so they must be of one '
                    f'size (mmseg\'s ViT: all at stride 16), but {desc}, at strides {strides}: '
                    f'use a neck made for a pyramid (e.g. mmseg\'s FPN with in_channels='
                    f'{channels}) with a head that takes one (e.g. UPerHead), or remove the '
                    'neck']
    rescale = _rescaling_neck(neck, backbone) if backbone is not None else ''
    if kind == 'Feature2Pyramid' and rescale:
        if _feature2pyramid_fails(neck, channels):
            return [f'{desc}. {rescale}']
        print_log(rescale, logger='current', level=logging.WARNING)
        return []
    if not isinstance(in_channels, (list, tuple)):
        return []
    reversed_ = kind in REVERSED_NECKS
    want = channels[::-1] if reversed_ else channels
    if list(in_channels) == want:
        if rescale:
            print_log(rescale, logger='current', level=logging.WARNING)
        return []
    order = ' (deepest first: it takes the maps in reverse order)' if reversed_ else ''
    # in the config's own form: mmseg's JPU asserts a tuple
    fix = tuple(want) if isinstance(in_channels, tuple) else want
    have = tuple(in_channels) if isinstance(in_channels, tuple) else list(in_channels)
    line = f'model.{name}.in_channels={have} ({kind}) but {desc}' + (
        f'. {rescale}' if rescale else
        f': set {name}.in_channels={fix}{order}{_start_level_hint(name, neck, backbone, model)}'
        f' ({other})')
    if every_map:
        return [line]
    print_log(line, logger='current', level=logging.WARNING)
    return []


def _ssd_errors(name: str, neck: nn.Module, channels: List[int], desc: str,
                model: nn.Module, other: str) -> List[str]:
    """mmdet's SSDNeck: every map, in order (its L2 norm on the first, its extra levels from the
    last). The advice names the three settings that change together: SSDNeck asserts that its
    out_channels start with its in_channels, and the SSD head takes what the neck returns."""
    in_channels, first, last, extras = _ssd_in_channels(neck, model)
    if in_channels is not None:
        if in_channels == channels:
            return []
        have = f'model.{name}.in_channels={tuple(in_channels)} (SSDNeck)'
    else:  # the count is not known: the widths the neck reads
        if first in (None, channels[0]) and last in (None, channels[-1]):
            return []
        have = (f'model.{name} (SSDNeck) reads ' + (
            f'the first map with its L2 norm of {first} channels and ' if first else '') +
            f'the last map into its first extra level with {last} channels')
    outs = tuple(channels + extras)
    fix = (f'set {name}.in_channels={tuple(channels)}, {name}.out_channels={outs} (SSDNeck '
           f'asserts they start with its in_channels) and bbox_head.in_channels={outs}')
    levels = getattr(getattr(getattr(model, 'bbox_head', None), 'prior_generator', None),
                     'num_levels', None)
    if levels is not None and levels != len(outs):
        fix += (f", with bbox_head.anchor_generator's strides and ratios for {len(outs)} "
                f'levels (it has {levels})')
    return [f'{have} but {desc}: {fix} ({other})']


def _list_head_errors(model: nn.Module, channels: List[int], desc: str) -> List[str]:
    """mmdet's SSD and YOLOv3 heads list one width per map the neck returns (SSDNeck's
    out_channels, YOLOV3Neck's, deepest first): following the SSD advice without the head's
    part failed in the first forward inside a convolution."""
    head = getattr(model, 'bbox_head', None)
    kind = type(head).__name__
    in_channels = getattr(head, 'in_channels', None)
    if kind not in ('SSDHead', 'YOLOV3Head') or not isinstance(in_channels, (list, tuple)) or \
            list(in_channels) == channels:
        return []
    fix = tuple(channels) if isinstance(in_channels, tuple) else channels
    return [f'model.bbox_head.in_channels={in_channels} ({kind}, one per map) but {desc}: set '
            f'bbox_head.in_channels={fix}']


def _named(name: str, module: Optional[nn.Module]):
    """``(name, module)``, ``(name[i], module[i])`` for each of a ModuleList (a cascade's
    stages, several decode heads), nothing for None."""
    if isinstance(module, nn.ModuleList):
        for i, m in enumerate(module):
            yield f'{name}[{i}]', m
    elif module is not None:
        yield name, module


def _det_heads_errors(model: nn.Module, channels: List[int], desc: str) -> List[str]:
    """mmdet's heads that take every map the neck returns at one width (its out_channels):
    the dense heads' and RPN's ``in_channels`` (an int), the RoI heads' extractors'
    ``out_channels`` and their bbox/mask heads' ``in_channels``. A neck whose out_channels
    changed alone failed in the first forward inside a convolution."""
    if len(set(channels)) != 1:
        return []  # maps of several widths: heads that list them (SSD's, YOLOv3's) are apart
    width = channels[0]
    found = []
    for name in ('rpn_head', 'bbox_head'):
        for path, head in _named(name, getattr(model, name, None)):
            found.append((path, head, 'in_channels', 'runs on every map'))
    roi_head = getattr(model, 'roi_head', None)
    for part, attr, how in (('bbox_roi_extractor', 'out_channels', 'pools the maps'),
                            ('mask_roi_extractor', 'out_channels', 'pools the maps'),
                            ('bbox_head', 'in_channels', 'takes the pooled maps'),
                            ('mask_head', 'in_channels', 'takes the pooled maps')):
        if getattr(roi_head, 'share_roi_extractor', False) and part == 'mask_roi_extractor':
            continue
        for path, module in _named(f'roi_head.{part}', getattr(roi_head, part, None)):
            found.append((path, module, attr, how))
    errors = []
    for path, module, attr, how in found:
        value = getattr(module, attr, None)
        if value is None and type(module).__name__ == 'CenterNetHead':
            # it keeps no in_channels: its heatmap branch's first convolution takes them
            value = _conv_in(module.heatmap_head[0])
        if isinstance(value, int) and not isinstance(value, bool) and value != width:
            errors.append(f'model.{path}.{attr}={value} ({type(module).__name__}, {how}) but '
                          f'{desc}: set {path}.{attr}={width}')
    return errors


def _out_desc(name: str, neck: nn.Module, channels: List[int]) -> str:
    return (f'model.{name} ({type(neck).__name__}) returns {len(channels)} maps with '
            f'{list(channels)} channels')


def _input_errors(model: nn.Module, backbone: nn.Module) -> List[str]:
    """The data preprocessor's normalisation against the backbone's ``in_channels``: one
    ``mean``/``std`` value per channel (else the first batch failed in the preprocessor with
    a bare shape error). mmdet's and mmseg's ``bgr_to_rgb`` converts 3-channel images only:
    with another count it is a warning (the channels arrive as loaded)."""
    preprocessor = getattr(model, 'data_preprocessor', None)
    conv = dict(backbone.named_parameters()).get(backbone.input_conv)
    if preprocessor is None or conv is None or conv.dim() != 4:
        return []
    channels = conv.shape[1]
    errors = []
    # mmengine's ImgDataPreprocessor (mmdet's DetDataPreProcessor) takes 1 or 3 values only
    from mmengine.model import ImgDataPreprocessor
    fix = ('give one value, or set mean=None, std=None and normalise in the pipeline '
           f'({type(preprocessor).__name__} takes 1 or 3 values)'
           if isinstance(preprocessor, ImgDataPreprocessor) and channels != 3 else
           'give one value per input channel')
    if getattr(preprocessor, '_enable_normalize', False):
        for name in ('mean', 'std'):
            value = getattr(preprocessor, name, None)
            if isinstance(value, torch.Tensor) and value.numel() not in (1, channels):
                errors.append(f'model.data_preprocessor.{name} has {value.numel()} values '
                              f'({[round(v, 4) for v in value.flatten().tolist()]}) but the '
                              f'backbone ({type(backbone).__name__}) takes in_channels='
                              f'{channels}: {fix}')
    convert = getattr(preprocessor, '_channel_conversion',
                      getattr(preprocessor, 'channel_conversion', False))
    if convert and channels != 3:
        print_log(f'model.data_preprocessor: bgr_to_rgb/rgb_to_bgr reverses the channels of '
                  f'3-channel images only, so the {channels}-channel inputs of this '
                  f'{type(backbone).__name__} (in_channels={channels}) reach it in the order '
                  'they were loaded (cv2: B, G, R, then the others); an RGB checkpoint\'s '
                  'patch embedding, adapted, expects R, G, B first: order the channels in the '
                  'pipeline, and mean/std with them', logger='current', level=logging.WARNING)
    return errors


def backbone_fit_errors(model: nn.Module) -> List[str]:
    """What does not fit between an mmvtx backbone's outputs and the module that reads them,
    or between its inputs and the data preprocessor's normalisation (empty: it fits, or the
    backbone is not one of mmvtx's)."""
    from mmvtx.models.backbones.base import VisionBackbone
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, VisionBackbone):
        return []
    return _input_errors(model, backbone) + _map_errors(model, backbone)


def _map_errors(model: nn.Module, backbone: nn.Module) -> List[str]:
    channels = list(backbone.out_channels)
    desc = _backbone_desc(backbone)
    cls_token = _cls_token(backbone)
    neck = getattr(model, 'neck', None)
    if neck is not None and _cls_pairs(backbone):
        name = 'neck[0]' if isinstance(neck, nn.Sequential) else 'neck'
        first = neck[0] if isinstance(neck, nn.Sequential) else neck
        return [f'model.{name} ({type(first).__name__}) takes maps, but {desc} as (map, '
                '[CLS] token) pairs (output_cls_token=True, for DPTHead): set '
                'backbone.output_cls_token=False']
    if neck is not None:
        # a config's list of necks is an nn.Sequential: each takes what the one before returns
        # (mmdet checks none of it: a wrong width failed inside a convolution, a wrong count in
        # BFP with an empty AssertionError)
        chain = list(neck) if isinstance(neck, nn.Sequential) else [neck]
        other = "or the backbone's out_indices to the levels the neck expects"
        for i, part in enumerate(chain):
            name = f'neck[{i}]' if isinstance(neck, nn.Sequential) else 'neck'
            errors = _neck_errors(name, part, channels, desc, cls_token and i == 0,
                                  backbone if i == 0 else None, model, other)
            if errors:
                return errors
            channels = _neck_out(part, channels)
            if channels is None or None in channels:
                return []
            desc = _out_desc(name, part, channels)
            other = f'or the settings of model.{name} to what it takes'
        # the heads read the last neck's maps (the [CLS] token stops at the neck)
        return _list_head_errors(model, channels, desc) + _det_heads_errors(
            model, channels, desc) + _seg_heads_errors(model, channels, desc, False) + \
            _stride_errors(model, chain, [f'neck[{i}]' if isinstance(neck, nn.Sequential)
                                          else 'neck' for i in range(len(chain))], backbone)
    return _seg_heads_errors(model, channels, desc, cls_token, _cls_pairs(backbone))


def _seg_heads_errors(model: nn.Module, channels: List[int], desc: str,
                      cls_token: bool, cls_pairs: bool = False) -> List[str]:
    """mmseg's decode and auxiliary heads, and mmdet's MaskFormer/Mask2Former head, against the
    maps (``desc``) they are given."""
    errors = []
    # mmseg's heads; mmdet's MaskFormer/Mask2Former (no neck: their pixel decoder is one)
    for name in ('decode_head', 'auxiliary_head', 'panoptic_head'):
        for path, head in _named(name, getattr(model, name, None)):
            errors += _head_errors(path, head, channels, desc, cls_token, cls_pairs)
    return errors


def _head_reads(head: nn.Module, n: int):
    """The positions of the backbone's maps an mmseg head reads (``None``: every map, or not
    known)."""
    in_index = getattr(head, 'in_index', None)
    if getattr(head, 'pixel_decoder', None) is not None or type(head).__name__ == 'DPTHead' \
            or not isinstance(in_index, (int, list, tuple)):
        return None
    read = {i % n for i in (in_index if isinstance(in_index, (list, tuple)) else [in_index])}
    if _conv_in(getattr(head, 'c1_bottleneck', None)) is not None:
        read.add(0)  # DeepLabV3+'s c1 branch reads the first map
    return read


def _read_maps(model: nn.Module, backbone: nn.Module):
    """Which of the maps the backbone returns the model reads: ``(positions, {setting path:
    (value, what to set it to for out_indices of those maps alone)})``, or ``None`` where every
    map is read or it is not known."""
    n = len(backbone.out_indices)
    neck = getattr(model, 'neck', None)
    if neck is not None:
        first = neck[0] if isinstance(neck, nn.Sequential) and len(neck) else neck
        name = 'neck[0]' if isinstance(neck, nn.Sequential) else 'neck'
        if type(first).__name__ in LAST_MAP_NECKS:  # YOLOF's, CenterNet's: the last map only
            return ({n - 1}, {}) if n > 1 else None
        if not _fpn_like(first) or (first.start_level, first.backbone_end_level) == (0, n):
            return None  # necks that take every map they are given
        read = set(range(first.start_level, first.backbone_end_level))
        fix = {f'{name}.in_channels': [first.in_channels[i] for i in sorted(read)],
               f'{name}.start_level': 0}
        if first.end_level != -1:
            fix[f'{name}.end_level'] = first.end_level - first.start_level
        return read, fix
    heads = [(path, head) for name in ('decode_head', 'auxiliary_head', 'panoptic_head')
             for path, head in _named(name, getattr(model, name, None))]
    read, reads = set(), []
    for path, head in heads:
        inner = getattr(head, 'kernel_generate_head', None)
        if isinstance(inner, nn.Module):  # K-Net: the head that reads the maps
            path, head = f'{path}.kernel_generate_head', inner
        head_read = _head_reads(head, n + _cls_token(backbone))
        if head_read is None:
            return None
        read |= head_read
        reads.append((path, head))
    read.discard(n)  # a [CLS] token returned after the maps
    if not heads or len(read) == n:
        return None
    position = {p: i for i, p in enumerate(sorted(read))}
    fix = {}
    for path, head in reads:
        in_index = head.in_index
        fix[f'{path}.in_index'] = [position[i % n] for i in in_index] \
            if isinstance(in_index, (list, tuple)) else position[in_index % n]
    return read, fix


def unread_maps_message(model: nn.Module) -> str:
    """Where the model never reads some of the maps an mmvtx backbone returns (an FPN with
    mmdet's R-50 ``start_level=1``; mmseg's FCN/PSPNet/DeepLabV3+ heads, which select one or
    two maps), and the backbone has parameters those maps alone pass through (Swin's output
    norms, ViT's pyramid levels, CvT's ``out_norms``): what to set ('' where there is none).
    Those parameters get no gradient: DDP without ``find_unused_parameters`` stops at the
    second iteration ("Expected to have finished reduction in the prior iteration...")."""
    from mmvtx.models.backbones.base import VisionBackbone
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, VisionBackbone):
        return ''
    found = _read_maps(model, backbone)
    if found is None:
        return ''
    read, fix = found
    unread_only = backbone.output_modules(read)
    params = [f'{name}.{p}' for name, module in backbone.named_modules()
              if module in unread_only
              for p, param in module.named_parameters() if param.requires_grad]
    if not params:
        return ''
    unread = [p for p in range(len(backbone.out_indices)) if p not in read]
    strides = [_level_strides(backbone)[p] for p in unread]
    keep = tuple(_written_out_indices(backbone)[p] for p in sorted(read))
    todo = ', '.join([f'backbone.out_indices={keep}'] + [f'{k}={v}' for k, v in fix.items()])
    return (f'{_backbone_desc(backbone)}, but the model never reads the maps at strides '
            f'{strides} (positions {unread}): the backbone\'s {", ".join(params)} get no '
            f'gradient, which DDP (find_unused_parameters=False) refuses at the second '
            f'iteration: set {todo} (the same model, without the maps it does not read), or '
            f'find_unused_parameters=True')


def _class_heads(model: nn.Module):
    """``(config path, head)`` of the heads whose ``num_classes`` is the dataset's class count:
    mmdet's dense heads (``bbox_head``) and RoI heads' bbox and mask heads (every stage of a
    cascade), mmseg's decode and auxiliary heads. RPN heads (one class, object or not), panoptic
    heads (things and stuff apart) and other modules with a ``num_classes`` are not read."""
    found = []

    def add(path, module):
        if isinstance(module, (nn.ModuleList, list, tuple)):
            for i, m in enumerate(module):
                add(f'{path}[{i}]', m)
        elif module is not None and isinstance(getattr(module, 'num_classes', None), int):
            found.append((path, module))

    roi = getattr(model, 'roi_head', None)
    for name in ('bbox_head', 'mask_head'):
        add(f'model.roi_head.{name}', getattr(roi, name, None))
    for name in ('bbox_head', 'decode_head', 'auxiliary_head'):
        add(f'model.{name}', getattr(model, name, None))
    return found


def class_count_errors(model: nn.Module, classes, dataset: str = 'the dataset'):
    """``(errors, warnings)``: each head of :func:`_class_heads` whose ``num_classes`` is not
    the number of the dataset's ``classes`` (its ``metainfo``, e.g. a user's
    ``metainfo=dict(classes=(...))`` with the COCO recipe's ``num_classes=80`` left). Fewer
    outputs than classes is an error: mmdet's heads take label ``num_classes`` as background
    (that class trains as background without a word), larger labels fail in the loss. More is a
    warning: the model trains outputs no label asks for, and a box labelled with one of them
    stops mmdet's CocoMetric (``IndexError``) at the first validation. ``classes`` given as one
    string (``classes=('balloon')``, no comma) is an error: it counts its letters."""
    if classes is None:
        return [], []
    if isinstance(classes, str):
        return [f'{dataset} metainfo classes={classes!r} is a string, not a tuple of names: '
                f'write classes=({classes!r},)'], []
    n = len(classes)
    errors, warnings = [], []
    for path, head in _class_heads(model):
        if head.num_classes == n:
            continue
        line = (f'{path}.num_classes={head.num_classes} ({type(head).__name__}) but '
                f'{dataset} has {n} classes {tuple(classes)[:8]}'
                f'{"..." if n > 8 else ""}: set {path}.num_classes={n}')
        (errors if head.num_classes < n else warnings).append(line)
    return errors, warnings


def dataset_classes(dataset):
    """The class names of a built dataset (a wrapper's: its ``metainfo`` is the wrapped one's),
    or None: a panoptic dataset's ``thing_classes`` (what mmdet's detection heads classify),
    else its ``classes``."""
    metainfo = getattr(dataset, 'metainfo', None) or {}
    return metainfo.get('thing_classes', metainfo.get('classes'))


def _names(classes) -> str:
    classes = tuple(classes)
    return f'{len(classes)} classes {classes[:8]}{"..." if len(classes) > 8 else ""}'


def eval_class_errors(learnt, learnt_from: str, evaluated, evaluated_from: str) -> List[str]:
    """One line if a dataset is evaluated with other classes (names, order or number) than the
    model learnt, else none. The evaluators score label ``i`` as the evaluated dataset's
    ``classes[i]`` (mmdet's CocoMetric maps it to that name's category id, mmseg's IoUMetric
    counts that many classes): a user's ``metainfo=dict(classes=...)`` set on the training
    dataset and left out of ``val_dataloader``/``test_dataloader`` (whose dataset then has
    COCO's 80 or no classes) gave wrong metrics without a word. ``None`` (not known) or a
    string (refused elsewhere) is not compared."""
    if learnt is None or evaluated is None or isinstance(learnt, str) or \
            isinstance(evaluated, str):
        return []
    learnt, evaluated = tuple(learnt), tuple(evaluated)
    if learnt == evaluated:
        return []
    first = next((i for i, (a, b) in enumerate(zip(learnt, evaluated)) if a != b), None)
    where = (f'; they first differ at label {first}: {learnt[first]!r} vs '
             f'{evaluated[first]!r}' if first is not None else '')
    return [f'{evaluated_from} has {_names(evaluated)} but the model learnt '
            f'{_names(learnt)} ({learnt_from}){where}. Its evaluator would score label i as '
            f'the dataset\'s class i, so the metrics would be wrong: give that dataset the same '
            f'metainfo=dict(classes=...) as the training one']


def coco_category_errors(classes, evaluator, where: str) -> List[str]:
    """One line per COCO evaluator (mmdet's ``CocoMetric`` with an ``ann_file``) whose
    annotation file does not name the dataset's ``classes`` as they are written, in their order.

    mmdet's ``CocoDataset`` reads the categories whose names are among ``metainfo['classes']``
    and labels them 0, 1, ... in the order the file lists them, not in the order of
    ``classes``: classes written in another order (``('bird', 'cat', 'dog')`` for a file that
    lists cat, dog, bird) train and score correctly but every drawing, per-class result and
    inferencer output names them wrongly; a name the file does not have (``'Dog'`` for
    ``'dog'``, a typo) leaves that category's annotations out of training and evaluation (its
    objects become background) and shifts the names of the classes after it. Neither is said
    by mmdet."""
    if classes is None or isinstance(classes, str):
        return []
    errors = []
    for metric in getattr(evaluator, 'metrics', None) or []:
        api = getattr(metric, '_coco_api', None)
        if api is None or type(metric).__name__ != 'CocoMetric':
            continue
        names = [c.get('name') for c in api.dataset.get('categories', [])]
        ann_file = f"its {type(metric).__name__}'s ann_file"
        listed = f'{len(names)} categories {tuple(names[:8])}{"..." if len(names) > 8 else ""}'
        missing = [c for c in classes if c not in names]
        in_file_order = tuple(n for n in names if n in classes)
        if missing:
            errors.append(
                f'{where} has classes {missing} that {ann_file} does not name (it has '
                f'{listed}): mmdet leaves the annotations of a class it cannot find out (its '
                f'objects are trained and scored as background) and names the labels after it '
                f'wrongly. Write the names as the file does.')
        elif in_file_order != tuple(classes):
            errors.append(
                f'{where} has classes {tuple(classes)}, and {ann_file} lists them in the order '
                f'{in_file_order}: mmdet labels them in the file\'s order, so drawings, '
                f'per-class results and the inferencers would name every label wrongly. Write '
                f'metainfo=dict(classes={in_file_order}).')
    return errors


@HOOKS.register_module()
class BackboneFitHook(Hook):
    """Raises ``ValueError`` in ``before_run`` when the neck (or, without one, mmseg's decode
    and auxiliary heads) does not take the maps the mmvtx backbone returns, naming the settings
    (see :func:`backbone_fit_errors`); in ``before_train``, when the model never reads some of
    the maps and DDP would stop on their parameters (a warning without DDP, see
    :func:`unread_maps_message`); and in ``before_train`` when a head's ``num_classes`` is
    smaller than the training dataset's number of classes (a warning where it is larger; see
    :func:`class_count_errors`: mmdet's ``NumClassCheckHook``, which no mmdet 3.x config adds,
    asserts the same), or when the validation dataset has other classes than the training one
    (:func:`eval_class_errors`)."""
    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = unwrap_model(runner.model)
        errors = backbone_fit_errors(model)
        if errors:
            raise ValueError('\n'.join(
                ['the model\'s parts do not fit together:'] + errors))

    def before_test(self, runner) -> None:
        """The test dataset's classes against its COCO annotation file (see
        :func:`coco_category_errors`), before any image is run."""
        loop = getattr(runner, '_test_loop', None)
        dataset = getattr(getattr(loop, 'dataloader', None), 'dataset', None)
        if dataset is None:
            return
        errors = coco_category_errors(
            dataset_classes(dataset), getattr(loop, 'evaluator', None),
            f'the test dataset (test_dataloader.dataset, {type(dataset).__name__})')
        if errors:
            raise ValueError('\n'.join(['the test dataset\'s classes do not fit its '
                                        'annotation file:'] + errors))

    def before_train(self, runner) -> None:
        # training only: tools/test.py (DDP-wrapped in dist_test.sh) computes no gradients
        model = unwrap_model(runner.model)
        loader = getattr(runner, 'train_dataloader', None)
        dataset = getattr(loader, 'dataset', None)
        classes = dataset_classes(dataset)
        errors, warnings = class_count_errors(
            model, classes, f'the training dataset ({type(dataset).__name__})')
        # the validation dataset, built before training starts: its classes are the ones
        # the model learns (checked here, not after the first epoch)
        val_loop = getattr(runner, '_val_loop', None)
        val_set = getattr(getattr(val_loop, 'dataloader', None), 'dataset', None)
        if val_set is not None:
            errors += eval_class_errors(
                classes, f'the training dataset\'s, {type(dataset).__name__}',
                dataset_classes(val_set),
                f'the validation dataset (val_dataloader.dataset, {type(val_set).__name__})')
            errors += coco_category_errors(
                dataset_classes(val_set), getattr(val_loop, 'evaluator', None),
                f'the validation dataset (val_dataloader.dataset, {type(val_set).__name__})')
        if errors:
            raise ValueError('\n'.join(['the model does not fit the datasets\' classes:'] +
                                        errors + warnings))
        for line in warnings:
            print_log(line, logger='current', level=logging.WARNING)
        unread = unread_maps_message(model)
        if unread and runner.model is not model and \
                getattr(runner.model, 'find_unused_parameters', True) is False:
            raise ValueError(unread)
        if unread:
            print_log(unread, logger='current', level=logging.WARNING)
