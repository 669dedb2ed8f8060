"""Refuse a model whose neck or decode head does not take what the backbone returns.

Changing a backbone's ``out_indices``, preset or width without its neck's ``in_channels`` (a
common ``--cfg-options`` edit) otherwise fails inside the first forward: mmdet's FPN with a bare
``assert len(inputs) == len(self.in_channels)`` (an empty ``AssertionError``), a convolution
with a shape message that names neither setting, or mmseg's ``in_index`` with an
``IndexError``. :class:`BackboneFitHook` (which ``tools/train.py`` and ``tools/test.py`` add)
checks the built model before the run starts and names both settings and the values that fit.

Checked for mmvtx's backbones (their ``out_channels``):

* the neck (the first one where the config chains several), where its ``in_channels`` is a
  list: mmdet's and mmseg's FPN-like necks take every returned map, in order, so the list must
  equal the backbone's channels (mmdet's ``ChannelMapper``, the DETR family's neck, keeps no
  ``in_channels``: they are read from its input convolutions; its ``YOLOV3Neck`` takes them
  deepest first: the list reversed). For necks not known to take every map a mismatch is a
  warning;
* without a neck, mmseg's decode and auxiliary heads: ``in_index`` within the returned maps and
  ``in_channels`` equal to the channels it selects (for ``resize_concat`` the list of them,
  which mmseg sums), DeepLabV3+'s ``c1_in_channels`` equal to the first map's, and the
  ``in_channels`` of MaskFormer/Mask2Former heads (their pixel decoder's) equal to the
  backbone's channels; a returned [CLS] token (``output_cls_token``) is not a map.

mmseg's ``MultiLevelNeck`` (its ViT recipes) and ``Feature2Pyramid`` (BEiT/MAE) rescale
stride-16 maps into a pyramid: on mmvtx's maps, already at strides 4..32, the message (or,
where the neck runs, a warning) says to remove it (or set MultiLevelNeck's scales to 1).
"""
import logging
from typing import List

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from torch import nn

from mmvtx.engine._model import unwrap_model
from mmvtx.registry import HOOKS

# necks that take every map the backbone returns, in order, with in_channels[i] channels
EVERY_MAP_NECKS = ('FPN', 'PAFPN', 'ChannelMapper', 'NASFPN', 'MultiLevelNeck', 'CSPNeXtPAFPN',
                   'YOLOXPAFPN', 'SSDNeck', 'ICNeck', 'YOLOV3Neck')
# necks whose in_channels list the maps deepest first (in_channels[0] is the last map's)
REVERSED_NECKS = ('YOLOV3Neck',)


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
    return getattr(backbone, 'output_cls_token', False) is True


def _backbone_desc(backbone: nn.Module) -> str:
    return (f'model.backbone ({type(backbone).__name__}, out_indices='
            f'{tuple(backbone.out_indices)}) returns {len(backbone.out_channels)} maps with '
            f'{list(backbone.out_channels)} channels' +
            (' and then its [CLS] token (B x C, output_cls_token=True)'
             if _cls_token(backbone) else ''))


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
                 cls_token: bool = False) -> List[str]:
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
        errors.append(f'model.{name}.in_channels={have!r} but the maps its in_index='
                      f'{in_index!r} selects have {want!r} channels: {desc}: set '
                      f'{name}.in_channels={want!r}')
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
    strides = [4 * 2 ** i for i in backbone.out_indices]
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
    if isinstance(neck, nn.Sequential) and len(neck):
        neck = neck[0]
    if neck is not None:
        kind = type(neck).__name__
        in_channels = _neck_in_channels(neck)
        if cls_token and kind in EVERY_MAP_NECKS + ('Feature2Pyramid',):
            return [f'model.neck ({kind}) takes every output of the backbone as a map: {desc}: '
                    'set backbone.output_cls_token=False']
        rescale = _rescaling_neck(neck, backbone)
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
        line = f'model.neck.in_channels={list(in_channels)} ({kind}) but {desc}' + (
            f'. {rescale}' if rescale else
            f': set neck.in_channels={want}{order} (or the backbone\'s out_indices to the '
            'levels the neck expects)')
        if kind in EVERY_MAP_NECKS:
            return [line]
        print_log(line, logger='current', level=logging.WARNING)
        return []
    errors = []
    for name in ('decode_head', 'auxiliary_head'):
        heads = getattr(model, name, None)
        if heads is None:
            continue
        if isinstance(heads, nn.ModuleList):
            for i, head in enumerate(heads):
                errors += _head_errors(f'{name}[{i}]', head, channels, desc, cls_token)
        else:
            errors += _head_errors(name, heads, channels, desc, cls_token)
    return errors


@HOOKS.register_module()
class BackboneFitHook(Hook):
    """Raises ``ValueError`` in ``before_run`` when the neck (or, without one, mmseg's decode
    and auxiliary heads) does not take the maps the mmvtx backbone returns, naming the settings
    (see :func:`backbone_fit_errors`)."""
    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = unwrap_model(runner.model)
        errors = backbone_fit_errors(model)
        if errors:
            raise ValueError('\n'.join(
                ['the model\'s parts do not fit together:'] + errors))
