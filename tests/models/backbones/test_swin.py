"""mmvtx.SwinTransformer against the paper's formulas, mmdet's SwinTransformer and Hugging Face
transformers' SwinModel / SwinBackbone (random weights, loaded through the public loading path)."""
import math

import pytest
import torch
from mmengine.registry import DefaultScope

from mmvtx.models.backbones.swin import (SwinTransformer, convert_swin,
                                         get_relative_position_index)
from mmvtx.models.layers.pos_embed import resize_rel_pos_bias_table
from mmvtx.models.layers.window import (shifted_window_mask, window_partition,
                                        window_token_index)
from mmvtx.utils import CheckpointMismatchError, load_backbone_checkpoint
from tests.conftest import jitter_

TOL = 1e-4
SIZES = [(224, 224), (200, 296)]  # square pretraining size; non-square, not a multiple of 32


def authors_relative_position_index(window_size):
    """The authors' relative position index code, step by step."""
    coords_h = torch.arange(window_size)
    coords_w = torch.arange(window_size)
    coords = torch.stack(torch.meshgrid([coords_h, coords_w], indexing='ij'))
    coords_flatten = torch.flatten(coords, 1)
    relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]
    x_coords = relative_coords[0, :, :]
    y_coords = relative_coords[1, :, :]
    x_coords += window_size - 1
    y_coords += window_size - 1
    x_coords *= 2 * window_size - 1
    return x_coords + y_coords


@pytest.mark.parametrize('window_size', [2, 7, 12])
def test_relative_position_index_is_the_authors_formula(window_size):
    ours = get_relative_position_index(window_size)
    assert torch.equal(ours, authors_relative_position_index(window_size))
    assert ours.min() == 0 and ours.max() == (2 * window_size - 1) ** 2 - 1
    assert torch.equal(ours.diagonal(), torch.full((window_size ** 2,), ours[0, 0].item()))


@pytest.mark.parametrize('H,W', [(14, 14), (21, 14), (7, 28)])
def test_shift_mask_blocks_exactly_pairs_from_different_regions(H, W):
    M, s = 7, 3
    # where each token of the cyclically shifted map came from
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing='ij')
    orig = torch.stack([ys, xs], -1)
    rolled = torch.roll(orig, shifts=(-s, -s), dims=(0, 1))
    src = window_partition(rolled[None].float(), M)[0]  # nW, N, 2
    dst = window_partition(orig[None].float(), M)[0]  # shifted-frame positions
    # two tokens were neighbours before the shift iff the roll did not wrap between them
    d_src = (src[:, :, None] - src[:, None, :]).abs()
    d_dst = (dst[:, :, None] - dst[:, None, :]).abs()
    wrapped = (d_src != d_dst).any(-1)
    mask = shifted_window_mask(H, W, M, s)
    assert torch.equal(mask != 0, wrapped)
    assert (mask[mask != 0] == -100.0).all()


@pytest.mark.parametrize('H,W', [(1, 1), (1, 9), (9, 1), (3, 5), (31, 33), (33, 65),
                                 (64, 64), (97, 131), (224, 160)])
def test_output_shapes_any_size(H, W):
    model = SwinTransformer(embed_dims=16, depths=(1, 2, 1, 2), num_heads=(1, 2, 4, 8)).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, H, W))
    assert len(outs) == 4
    for i, (out, stride) in enumerate(zip(outs, (4, 8, 16, 32))):
        assert out.shape == (2, 16 * 2 ** i, math.ceil(H / stride), math.ceil(W / stride))
        assert out.is_contiguous() and torch.isfinite(out).all()


def test_out_indices_and_channels():
    model = SwinTransformer('tiny', out_indices=(1, 3)).eval()
    assert model.out_channels == (192, 768)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [192, 768]
    assert not hasattr(model, 'norm0')


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='unknown arch'):
        SwinTransformer('huge')
    with pytest.raises(ValueError, match='out_indices'):
        SwinTransformer('tiny', out_indices=(4,))
    with pytest.raises(ValueError, match='divisible'):
        SwinTransformer(embed_dims=10, num_heads=(3, 6, 12, 24))
    with pytest.raises(ValueError, match='B x C x H x W'):
        SwinTransformer(embed_dims=12, depths=(1, 1, 1, 1)).eval()(torch.randn(3, 32, 32))


def test_presets_match_the_paper():
    expected = {'tiny': (96, (2, 2, 6, 2), (3, 6, 12, 24), 27.5e6),
                'small': (96, (2, 2, 18, 2), (3, 6, 12, 24), 48.8e6),
                'base': (128, (2, 2, 18, 2), (4, 8, 16, 32), 86.7e6)}
    for arch, (dim, depths, heads, params) in expected.items():
        model = SwinTransformer(arch)
        assert model.arch_settings == dict(embed_dims=dim, depths=depths, num_heads=heads)
        n = sum(p.numel() for p in model.parameters())
        assert abs(n - params) / params < 0.02, (arch, n)  # paper's counts include the head
    model = SwinTransformer('tiny', depths=(2, 2, 2, 2), embed_dims=48)
    assert model.arch_settings['embed_dims'] == 48 and model.arch_settings['depths'] == (2,) * 4


@pytest.mark.parametrize('H,W,shift', [(14, 14, 3), (9, 16, 3), (16, 9, 0), (5, 3, 3), (7, 7, 0)])
def test_window_gather_is_pad_roll_partition_and_back(H, W, shift):
    """The one-gather tiling equals zero-padding, the cyclic shift and the window partition
    written out step by step (pad, roll, partition), and its inverse restores the map."""
    M = 7
    tokens = torch.arange(1, H * W + 1, dtype=torch.float32).view(1, H, W, 1)
    padded = torch.nn.functional.pad(tokens, (0, 0, 0, -W % M, 0, -H % M))
    expected = window_partition(torch.roll(padded, (-shift, -shift), (1, 2)), M).reshape(-1)
    index, inverse, pad_slots = window_token_index(H, W, M, shift)
    got = tokens.reshape(-1)[index]
    got[pad_slots] = 0
    assert torch.equal(got, expected)
    assert torch.equal(got[inverse], tokens.reshape(-1))


@pytest.mark.parametrize('H,W,rule', [(14, 14, 0), (9, 16, 0), (5, 3, 7), (7, 20, 7), (8, 20, 7),
                                       (7, 7, 0)])
@pytest.mark.parametrize('extra_window', [False, True])
def test_compiling_geometry_ops_apply_the_rule_with_fixed_shapes(H, W, rule, extra_window):
    """The custom ops that build the geometry while compiling/exporting give the eager
    gather and mask, with the shift rule applied inside (``no_shift_within``: the unshifted
    gather and an all-zero mask where ``min(H, W) <= M``), the padded slots as a mask over all
    slots and, with ``extra_window`` (a window count that may be 1 while compiling or
    exporting), one more window of padded slots; their shapes
    depend on H, W and M alone (the fake implementations). Before, the padded slots were a
    list of ``slots - H*W`` indices and the rule a Python branch on the size."""
    from mmvtx.models.layers.window import (_shifted_window_mask_op, _window_token_index_op,
                                            padded)
    M, s = 7, 3
    shift = 0 if min(H, W) <= rule else s
    index, inverse, pad_slots = window_token_index(H, W, M, shift)
    got = _window_token_index_op(H, W, M, s, torch.device('cpu'), no_shift_within=rule,
                                 extra_window=extra_window)
    extra = M * M if extra_window else 0
    pad = torch.zeros(index.numel() + extra, dtype=torch.bool)
    pad[pad_slots] = True
    pad[index.numel():] = True
    assert got[2].dtype == torch.bool and torch.equal(got[2], pad)
    assert torch.equal(got[0][:index.numel()], index) and torch.equal(got[1], inverse)
    assert got[0].numel() == index.numel() + extra
    Hp, Wp = padded(H, M), padded(W, M)
    mask = _shifted_window_mask_op(Hp, Wp, M, s, torch.device('cpu'), no_shift_within=rule,
                                   extra_window=extra_window)
    expected = shifted_window_mask(Hp, Wp, M, s) if shift else torch.zeros(
        Hp * Wp // (M * M), M * M, M * M)
    assert torch.equal(mask[:expected.shape[0]], expected)
    assert mask.shape[0] == expected.shape[0] + extra_window and not mask[expected.shape[0]:].any()


# ----------------------------------------------------------------------------------- parity
def _mmdet_swin():
    from mmdet.models.backbones import SwinTransformer as MMDetSwin
    ref = MMDetSwin(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                    drop_path_rate=0.0)
    ref.eval()  # mmdet's train() returns None, so eval() cannot be chained
    return jitter_(ref)


@pytest.mark.parametrize('size', SIZES)
def test_parity_with_mmdet(size):
    ref = _mmdet_swin()
    # mmdet shifts every SW-MSA block, also where a map fits in one window (7x7 at 224 px)
    ours = SwinTransformer('tiny', drop_path_rate=0.0, always_shift=True).eval()
    loaded = load_backbone_checkpoint(ours, ref.state_dict())
    assert loaded.source == 'mmdet'
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        assert (e - g).abs().max() <= TOL


@pytest.mark.parametrize('size', [(200, 296)])
def test_training_gradients_match_mmdet(size):
    """Train-mode backward against mmdet's (autograd through its pad/roll/partition), at a
    size that pads every stage: every parameter's gradient, mapped to our names."""
    ref = _mmdet_swin()
    ref.train()  # returns None in mmdet
    ours = SwinTransformer('tiny', drop_path_rate=0.0, always_shift=True).train()
    load_backbone_checkpoint(ours, ref.state_dict())
    x = torch.randn(2, 3, *size)
    weights = None
    for model in (ref, ours):
        outs = model(x)
        weights = weights or [torch.randn_like(o) for o in outs]
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    expected = convert_swin({k: p.grad for k, p in ref.named_parameters()}, ours).state_dict
    for name, p in ours.named_parameters():
        scale = expected[name].abs().max().item()
        assert (p.grad - expected[name]).abs().max().item() <= 1e-4 * max(scale, 1.0), name


def _hf_config(**kw):
    from transformers import SwinConfig
    return SwinConfig(image_size=224, patch_size=4, embed_dim=96, depths=[2, 2, 6, 2],
                      num_heads=[3, 6, 12, 24], window_size=7, drop_path_rate=0.0,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)


@pytest.mark.parametrize('size', SIZES)
def test_parity_with_transformers_swin_backbone(size):
    from transformers import SwinBackbone
    ref = jitter_(SwinBackbone(_hf_config(out_features=['stage1', 'stage2', 'stage3',
                                                        'stage4'])).eval())
    # transformers' SwinBackbone partitions and shifts at every size (always_partition=True),
    # like mmdet; its SwinModel follows the authors' rule (next test)
    ours = SwinTransformer('tiny', drop_path_rate=0.0, always_shift=True).eval()
    assert load_backbone_checkpoint(ours, ref.state_dict()).source == 'transformers'
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected, got = ref(x).feature_maps, ours(x)
    assert len(expected) == len(got) == 4
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        assert (e - g).abs().max() <= TOL


def test_parity_with_transformers_swin_model_final_norm():
    from transformers import SwinModel
    ref = jitter_(SwinModel(_hf_config()).eval())
    ours = SwinTransformer('tiny', drop_path_rate=0.0).eval()
    # SwinModel has only the final norm: the other output norms stay at their init
    loaded = load_backbone_checkpoint(ours, ref.state_dict())
    assert set(loaded.may_miss) >= {'norm0', 'norm1', 'norm2'}
    x = torch.randn(1, 3, 200, 296)
    with torch.no_grad():
        expected = ref(x).last_hidden_state  # B, L, C
        got = ours(x)[3]
    assert (expected - got.flatten(2).transpose(1, 2)).abs().max() <= TOL


def test_a_simmim_checkpoint_loads_its_encoder():
    """transformers' SwinForMaskedImageModeling (SimMIM pre-training: the encoder under swin.,
    a mask token and a pixel decoder) loads its encoder, to SwinModel's features of the same
    weights; was refused for the decoder's and the mask token's keys."""
    from transformers import SwinForMaskedImageModeling
    ref = jitter_(SwinForMaskedImageModeling(_hf_config()).eval())
    ours = SwinTransformer('tiny', drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(ours, ref.state_dict()).source == 'transformers'
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref.swin(x).last_hidden_state
        got = ours(x)[3]
    assert (expected - got.flatten(2).transpose(1, 2)).abs().max() <= TOL


def test_the_simmim_authors_pretraining_checkpoint_loads_its_encoder():
    """The SimMIM authors' releases (simmim_pretrain__swin_base__img192_window6__800ep.pth:
    ``{'model': {'encoder.<the authors' Swin>', 'encoder.mask_token', 'decoder.0.*'}}``) load
    their encoder, as the authors' Swin release of the same weights loads; were refused as not
    a Swin checkpoint."""
    arch = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 1, 1))
    authors = _authors_layout(jitter_(SwinTransformer(arch)))['model']
    simmim = {'model': {**{f'encoder.{k}': v for k, v in authors.items()},
                        'encoder.mask_token': torch.zeros(1, 1, 16),
                        'decoder.0.weight': torch.zeros(3072, 128, 1, 1),
                        'decoder.0.bias': torch.zeros(3072)}}
    from_simmim, from_release = SwinTransformer(arch), SwinTransformer(arch)
    assert load_backbone_checkpoint(from_simmim, simmim).source == 'official'
    load_backbone_checkpoint(from_release, {'model': authors})
    for k, v in from_release.state_dict().items():
        assert torch.equal(from_simmim.state_dict()[k], v), k
    # mmpretrain's SimMIM (SimMIMSwinTransformer: mmdet's layout with a mask token, under
    # backbone., beside neck. and head.): was refused for the unexpected mask_token
    mmdet = {f'backbone.{k}': v for k, v in _mmdet_swin().state_dict().items()}
    mmpretrain = {**mmdet, 'backbone.mask_token': torch.zeros(1, 1, 96),
                  'neck.decoder.0.weight': torch.zeros(3072, 768, 1, 1)}
    from_mmpretrain, from_mmdet = SwinTransformer('tiny'), SwinTransformer('tiny')
    load_backbone_checkpoint(from_mmpretrain, {'state_dict': mmpretrain})
    load_backbone_checkpoint(from_mmdet, {'state_dict': mmdet})
    for k, v in from_mmdet.state_dict().items():
        assert torch.equal(from_mmpretrain.state_dict()[k], v), k


# ------------------------------------------------------------------------- the shift rule
def _authors_layout(model):
    """An mmvtx Swin's weights in the authors' release names (layers.i, merging at the end of
    a stage, one final norm)."""
    last = len(model.stages) - 1
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith(f'norm{last}.'):
            sd['norm.' + k.split('.', 1)[1]] = v
        elif not k.startswith('norm') and k != 'shift_rule':  # not in the authors' layout
            sd[k.replace('stages.', 'layers.')] = v
    return {'model': sd}


@pytest.mark.parametrize('size', [(224, 224), (160, 288)])  # stage 4 fits one window in both
def test_shift_rule_follows_the_checkpoint(tmp_path, size):
    """always_shift=None takes the rule of the codebase the checkpoint comes from; an explicit
    value always wins (and then differs from that codebase where a map fits in a window)."""
    from transformers import SwinModel
    mmdet_ref = _mmdet_swin()
    hf_ref = jitter_(SwinModel(_hf_config()).eval())
    torch.save(mmdet_ref.state_dict(), tmp_path / 'mmdet.pth')
    torch.save(hf_ref.state_dict(), tmp_path / 'hf.bin')
    authors = SwinTransformer('tiny', drop_path_rate=0.0)
    load_backbone_checkpoint(authors, hf_ref.state_dict())
    torch.save(_authors_layout(authors), tmp_path / 'swin_tiny_patch4_window7_224.pth')
    x = torch.randn(1, 3, *size)
    # SwinModel, as the authors' code, shrinks the window to a smaller map's side, which only
    # runs at its pretraining size; elsewhere the authors' rule is checked on the HF weights
    # loaded into mmvtx (whose parity with SwinModel at 224 the first case shows)
    native = size == (224, 224)
    with torch.no_grad():
        mmdet_out = mmdet_ref(x)
        authors_out = authors.eval()(x)
        hf_out = hf_ref(x).last_hidden_state if native else \
            authors_out[3].flatten(2).transpose(1, 2)
        for name, shifts in (('mmdet.pth', True), ('hf.bin', False),
                             ('swin_tiny_patch4_window7_224.pth', False)):
            model = _build(dict(type='Pretrained', checkpoint=str(tmp_path / name)))
            assert model.shifts_every_block is shifts, name
            got = model(x)
            if name == 'mmdet.pth':
                assert max((e - g).abs().max() for e, g in zip(mmdet_out, got)) <= TOL
            elif name == 'hf.bin':
                assert (hf_out - got[3].flatten(2).transpose(1, 2)).abs().max() <= TOL
            else:
                assert max((e - g).abs().max() for e, g in zip(authors_out, got)) <= TOL
        # explicit settings win, and the last stage then differs from the source codebase
        forced = _build(dict(type='Pretrained', checkpoint=str(tmp_path / 'mmdet.pth')),
                        always_shift=False)
        assert not forced.shifts_every_block
        assert (forced(x)[3] - mmdet_out[3]).abs().max() > 1e-3
        forced = _build(dict(type='Pretrained', checkpoint=str(tmp_path / 'hf.bin')),
                        always_shift=True)
        assert forced.shifts_every_block
        assert (forced(x)[3].flatten(2).transpose(1, 2) - hf_out).abs().max() > 1e-3


# ---------------------------------------------------------------------------- checkpoints
def _build(init_cfg, **kw):
    from mmvtx.registry import MODELS
    model = MODELS.build(dict(type='SwinTransformer', arch='tiny', drop_path_rate=0.0,
                              init_cfg=init_cfg, **kw))
    model.init_weights()
    return model.eval()


def test_pretrained_init_cfg_reads_every_file_format(tmp_path):
    from safetensors.torch import save_file
    from transformers import SwinBackbone
    ref = jitter_(SwinBackbone(_hf_config(out_features=['stage1', 'stage2', 'stage3',
                                                        'stage4'])).eval())
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(sd, str(tmp_path / 'model.safetensors'))
    torch.save(sd, tmp_path / 'pytorch_model.bin')
    mmdet_ref = _mmdet_swin()
    # a whole detector checkpoint as mmdet saves it: the backbone is found under 'backbone.'
    torch.save({'meta': {'epoch': 12}, 'state_dict': {
        **{f'backbone.{k}': v for k, v in mmdet_ref.state_dict().items()},
        'neck.lateral_convs.0.conv.weight': torch.zeros(1)}}, tmp_path / 'mask_rcnn.pth')
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = ref(x).feature_maps
        for name in ('model.safetensors', 'pytorch_model.bin'):
            got = _build(dict(type='Pretrained', checkpoint=str(tmp_path / name)),
                         always_shift=True)(x)
            assert max((e - g).abs().max() for e, g in zip(expected, got)) <= TOL
        got = _build(dict(type='Pretrained', checkpoint=str(tmp_path / 'mask_rcnn.pth')),
                      always_shift=True)(x)
        assert max((e - g).abs().max() for e, g in zip(mmdet_ref(x), got)) <= TOL


def test_mismatch_names_missing_and_unexpected_keys():
    ref = _mmdet_swin()
    sd = dict(ref.state_dict())
    sd.pop('stages.2.blocks.3.norm2.weight')
    sd['stages.2.blocks.3.extra.weight'] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError) as err:
        load_backbone_checkpoint(SwinTransformer('tiny'), sd)
    assert 'stages.2.blocks.3.norm2.weight' in str(err.value)
    assert 'stages.2.blocks.3.extra.weight' in str(err.value)
    with pytest.raises(CheckpointMismatchError, match='shape mismatches'):
        load_backbone_checkpoint(SwinTransformer('tiny', embed_dims=128, num_heads=(4, 8, 16, 32)),
                                 ref.state_dict())
    with pytest.raises(CheckpointMismatchError, match='not a Swin'):
        load_backbone_checkpoint(SwinTransformer('tiny'), {'fc.weight': torch.zeros(2)})


def test_loading_never_unpickles_objects(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ('unpickled!',))
    torch.save({'state_dict': {'x': torch.zeros(1)}, 'evil': Payload()}, tmp_path / 'bad.pth')
    with pytest.raises(RuntimeError, match='weights_only'):
        _build(dict(type='Pretrained', checkpoint=str(tmp_path / 'bad.pth')))
    with pytest.raises(FileNotFoundError):
        _build(dict(type='Pretrained', checkpoint=str(tmp_path / 'missing.pth')))


def test_relative_position_tables_resized_for_another_window():
    ref = _mmdet_swin()
    model = SwinTransformer('tiny', window_size=12)
    load_backbone_checkpoint(model, ref.state_dict())
    table = model.stages[0].blocks[0].attn.relative_position_bias_table
    assert table.shape == (23 * 23, 3)
    src = ref.stages[0].blocks[0].attn.w_msa.relative_position_bias_table
    # the centre (offset 0, 0) and the corners of the offset grid keep their values
    assert torch.allclose(table[11 * 23 + 11], src[6 * 13 + 6], atol=0.02)
    assert model(torch.randn(1, 3, 96, 96))[3].shape == (1, 768, 3, 3)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_tables_resized_in_float32(dtype):
    """A bf16/fp16 file's relative position tables of another window are resampled from the
    file's values in float32 and loaded so (they were rounded back to the file's dtype)."""
    arch = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
    src = jitter_(SwinTransformer(arch, window_size=12))
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in src.state_dict().items()}
    model = SwinTransformer(arch, window_size=7)
    load_backbone_checkpoint(model, sd)
    for i, stage in enumerate(model.stages):
        name = f'stages.{i}.blocks.1.attn.relative_position_bias_table'
        expected = resize_rel_pos_bias_table(sd[name].float(), 7)
        assert torch.equal(stage.blocks[1].attn.relative_position_bias_table, expected), name


def test_output_norms_of_other_levels_load(tmp_path):
    """mmpretrain's ImageNet Swin (norm3 only, under backbone.), mmseg's pretrain files (the
    authors' final norm kept as norm.) and a detector's norm0..3 load into a model returning
    other levels: the norms it returns and the file lacks stay at their init, the file's norms
    of levels it does not return are not loaded (all were refused naming the norms before)."""
    from mmseg.models.backbones import SwinTransformer as MMSegSwin
    arch = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
    x = torch.randn(1, 3, 64, 64)
    for ref_levels, levels in (((3,), (0, 1, 2, 3)), ((0, 1, 2, 3), (1, 3)), ((1, 2, 3), (3,))):
        ref = MMSegSwin(**arch, window_size=7, out_indices=ref_levels)
        ref.eval()
        jitter_(ref)
        sd = {f'backbone.{k}': v for k, v in ref.state_dict().items()}
        sd['head.fc.weight'] = torch.zeros(3, 128)
        ours = SwinTransformer(arch, out_indices=levels, drop_path_rate=0.0).eval()
        load_backbone_checkpoint(ours, {'state_dict': sd})
        with torch.no_grad():
            expected, got = dict(zip(ref_levels, ref(x))), dict(zip(levels, ours(x)))
        for level in set(ref_levels) & set(levels):
            assert (expected[level] - got[level]).abs().max() <= TOL, (ref_levels, levels)
    mmseg_pretrain = {k.replace('norm3.', 'norm.'): v for k, v in ref.state_dict().items()}
    ours = SwinTransformer(arch, drop_path_rate=0.0).eval()
    load_backbone_checkpoint(ours, mmseg_pretrain)
    assert torch.equal(ours.norm3.weight, ref.norm3.weight)


def test_own_checkpoint_with_other_out_indices_says_what_to_do():
    """A run's (or swin2mmvtx's) file has the output norms of the levels it returned: into a
    model returning other levels it is refused naming them and the way out; strict=False
    loads the shared levels."""
    arch = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    full = jitter_(SwinTransformer(arch, drop_path_rate=0.0).eval())
    part = SwinTransformer(arch, out_indices=(1, 2), drop_path_rate=0.0).eval()
    with pytest.raises(CheckpointMismatchError,
                       match=r'norm0(.|\n)*out_indices=\(0, 1, 2, 3\)(.|\n)*strict=False'):
        load_backbone_checkpoint(part, full.state_dict())
    load_backbone_checkpoint(part, full.state_dict(), strict=False)
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        expected = full(x)
        for level, got in zip((1, 2), part(x)):
            assert torch.equal(got, expected[level])


# ------------------------------------------------------------------------ training options
def test_frozen_stages_and_train_returns_self():
    model = SwinTransformer('tiny', frozen_stages=1)
    assert model.train() is model
    for m in (model.patch_embed, model.stages[0], model.norm0):
        assert not m.training
        assert all(not p.requires_grad for p in m.parameters())
    assert model.stages[1].training
    assert all(p.requires_grad for p in model.stages[1].parameters())
    with pytest.raises(ValueError, match='frozen_stages'):
        SwinTransformer('tiny', frozen_stages=5)


def test_frozen_levels_give_the_same_maps_in_train_mode():
    """Frozen = eval: the dropout after the patch embedding too (as mmdet's drop_after_pos)."""
    model = SwinTransformer(embed_dims=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4),
                            drop_rate=0.3, frozen_stages=1, out_indices=(0,)).train()
    assert not model.pos_drop.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], model(x)[0])


def test_with_cp_matches_plain_forward_and_backward():
    torch.manual_seed(1)
    plain = SwinTransformer(embed_dims=24, depths=(2, 2, 2, 2), drop_path_rate=0.0)
    ckpt = SwinTransformer(embed_dims=24, depths=(2, 2, 2, 2), drop_path_rate=0.0, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 70, 90, requires_grad=True)
    grads = []
    for model in (plain, ckpt):
        model.train()
        sum(o.square().mean() for o in model(x)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_drop_path_rises_linearly():
    model = SwinTransformer('tiny', drop_path_rate=0.2)
    rates = [b.drop_path.p for s in model.stages for b in s.blocks]
    assert rates[0] == 0 and abs(rates[-1] - 0.2) < 1e-9
    assert all(b > a for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_resolves_from_mmdet_and_mmseg_configs(scope):
    import importlib
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(dict(type='mmvtx.SwinTransformer', arch='tiny'))
        bare = registry.get('SwinTransformer')
    assert isinstance(model, SwinTransformer)
    assert bare is not None and bare is not SwinTransformer  # mmdet's/mmseg's own stays theirs
