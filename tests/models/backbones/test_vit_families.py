"""The ViT families as presets of mmvtx.ViT, against their independent implementations in
transformers (random weights through the public loading path, every returned level, at the
native size and at a non-square size): ViTDet (VitDetBackbone: window + global blocks, relative
positions), SAM's image encoder (SamVisionModel), DINOv2 (Dinov2Model, with SwiGLU),
DINOv2 with registers, DINOv3 (DINOv3ViTModel), DeiT-III; the authors' release layouts written
from the same weights load to the same outputs. Relative-position gradients against the math
formula in float64."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmvtx.models.backbones.vit import ViT
from mmvtx.utils import CheckpointMismatchError, load_backbone_checkpoint
from tests.conftest import jitter_

TOL = 1e-4
DIMS = dict(embed_dims=128, num_layers=4, num_heads=4)


def _levels(model, stride16_maps, H, W):
    """What the model must return given the reference's stride-16 map(s): the pyramid applied
    to them, cropped to ceil(H / s) (the pyramid is mmvtx's own, the maps are the reference's)."""
    with torch.no_grad():
        outs = model.pyramid(stride16_maps)
    return [o[..., :math.ceil(H / s), :math.ceil(W / s)]
            for o, s in zip(outs, model.pyramid.strides)]


def _assert_levels(ours, expected):
    assert len(ours) == len(expected)
    for o, e in zip(ours, expected):
        assert o.shape == e.shape and o.is_contiguous()
        assert (o - e).abs().max() <= TOL, (o - e).abs().max()


def _tokens_to_map(tokens, h, w):
    B, N, C = tokens.shape
    return tokens.transpose(1, 2).reshape(B, C, h, w)


# --------------------------------------------------------------------------------- ViTDet
def _hf_vitdet():
    from transformers import VitDetBackbone, VitDetConfig
    cfg = VitDetConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, mlp_ratio=4,
                       image_size=128, pretrain_image_size=224, patch_size=16, window_size=4,
                       window_block_indices=[0, 2], use_relative_position_embeddings=True,
                       use_absolute_position_embeddings=True, drop_path_rate=0.0,
                       layer_norm_eps=1e-6, out_features=['stage4'])
    return jitter_(VitDetBackbone(cfg).eval())


def _vitdet(**kw):
    return ViT('vitdet-b', **DIMS, img_size=224, rel_pos_img_size=128, window_size=4,
               global_attn_indexes=(1, 3), drop_path_rate=0.0, **kw).eval()


def _detectron2_layout(hf_sd):
    """The detectron2 ViTDet / MAE names (timm's), as in detectron2's model_final checkpoints
    (``backbone.net.``), written from the transformers weights."""
    out = {}
    for k, v in hf_sd.items():
        k = (k.replace('embeddings.position_embeddings', 'pos_embed')
             .replace('embeddings.projection', 'patch_embed.proj')
             .replace('encoder.layer.', 'blocks.').replace('.attention.', '.attn.'))
        out['backbone.net.' + k] = v.clone()
    out['backbone.simfp_2.0.weight'] = torch.zeros(1)  # detectron2's own pyramid: not read
    return out


@pytest.mark.parametrize('size', [(128, 128), (96, 160)])
def test_vitdet_matches_transformers(size):
    ref = _hf_vitdet()
    ours = _vitdet()
    assert load_backbone_checkpoint(ours, ref.state_dict()).source == 'transformers-vitdet'
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = ref(x).feature_maps[-1]
        outs = ours(x)
    _assert_levels(outs, _levels(ours, [expected] * 4, *size))
    # the same weights in detectron2's layout
    d2 = _vitdet()
    assert load_backbone_checkpoint(d2, _detectron2_layout(ref.state_dict())).source == 'timm'
    d2.pyramid.load_state_dict(ours.pyramid.state_dict())  # not part of any release
    with torch.no_grad():
        _assert_levels(d2(x), outs)


def test_detectron2_pkl_release_is_read_without_unpickling_objects(tmp_path):
    """detectron2 publishes ViTDet as ``model_final_*.pkl``: a plain pickle of numpy arrays
    (``{'model': {name: ndarray}, '__author__': ...}``), which torch.load(weights_only=True)
    cannot read. It loads (the arrays only; were 'could not be read with torch.load'); a pickle
    that would build anything else is refused naming it, and nothing of it runs."""
    import pickle

    ref = _hf_vitdet()
    sd = _detectron2_layout(ref.state_dict())
    release = {'model': {k: v.numpy() for k, v in sd.items()}, '__author__': 'Detectron2',
               'matching_heuristics': True}
    with open(tmp_path / 'model_final_61ccd1.pkl', 'wb') as f:
        pickle.dump(release, f, protocol=2)
    from_pkl, from_dict = _vitdet(), _vitdet()
    from_pkl.load_pretrained(str(tmp_path / 'model_final_61ccd1.pkl'))
    load_backbone_checkpoint(from_dict, sd)
    for k, v in from_dict.state_dict().items():
        if not k.startswith('pyramid.'):  # (detectron2's own pyramid is not read)
            assert torch.equal(from_pkl.state_dict()[k], v), k

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / 'ran'), 'w'))
    with open(tmp_path / 'evil.pkl', 'wb') as f:
        pickle.dump({'model': {'x': Payload()}}, f, protocol=2)
    with pytest.raises(RuntimeError, match=r'(?s)evil\.pkl .*(builtins|io)\.open, which is not a '
                       r'numpy array'):
        _vitdet().load_pretrained(str(tmp_path / 'evil.pkl'))
    assert not (tmp_path / 'ran').exists()


def test_vitdet_with_mae_weights_zero_initialises_relative_positions():
    """MAE's release has no rel_pos tables (and a [CLS] position, a decoder, a final norm):
    ViTDet starts the tables at zero, which must equal the same model without relative
    positions."""
    plain = ViT('base', **DIMS, img_size=224, with_cls_token=False, window_size=4,
                global_attn_indexes=(1, 3), final_norm=False, drop_path_rate=0.0).eval()
    mae = {k: v for k, v in jitter_(ViT(**DIMS, img_size=224)).state_dict().items()
           if not k.startswith('pyramid')}
    mae['decoder_embed.weight'] = torch.zeros(4, 4)
    mae['mask_token'] = torch.zeros(1, 1, 4)
    ours = _vitdet()
    ours.init_weights()
    load_backbone_checkpoint(ours, {'model': mae})
    load_backbone_checkpoint(plain, {'model': mae})
    plain.pyramid.load_state_dict(ours.pyramid.state_dict())
    assert all(b.attn.rel_pos_h.abs().max() == 0 for b in ours.blocks)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        _assert_levels(ours(x), plain(x))


def test_relative_position_tables_resized_on_load():
    ref = _hf_vitdet()
    ours = ViT('vitdet-b', **DIMS, img_size=224, rel_pos_img_size=256, window_size=4,
               global_attn_indexes=(1, 3), drop_path_rate=0.0)
    converted = load_backbone_checkpoint(ours, ref.state_dict())
    assert ours.blocks[1].attn.rel_pos_h.shape == (31, 32)  # 2 * 256/16 - 1
    assert ours.blocks[0].attn.rel_pos_h.shape == (7, 32)  # the window's: unchanged
    # the resampled tables are named with the file's shapes (a whole detector's file of another
    # grid is then not evaluated as one of this config: ConvertCheckpointHook -> CheckpointFitHook)
    assert {k: tuple(v.shape) for k, v in converted.resized.items()} == {
        f'blocks.{i}.attn.rel_pos_{a}': (15, 32) for i in (1, 3) for a in 'hw'}  # 2 * 128/16 - 1


def test_half_precision_relative_position_tables_resized_in_float32():
    """A bf16 file's relative position tables of another grid are resampled from the file's
    values in float32 and loaded so (they were rounded back to bfloat16)."""
    from mmvtx.models.layers.position import resize_rel_pos_table
    sd = {k: v.to(torch.bfloat16) for k, v in _hf_vitdet().state_dict().items()}
    ours = ViT('vitdet-b', **DIMS, img_size=224, rel_pos_img_size=256, window_size=4,
               global_attn_indexes=(1, 3), drop_path_rate=0.0)
    load_backbone_checkpoint(ours, sd)
    for i in (1, 3):
        table = sd[f'encoder.layer.{i}.attention.rel_pos_h']
        assert torch.equal(ours.blocks[i].attn.rel_pos_h, resize_rel_pos_table(table.float(), 31))


def test_a_whole_vit_detector_of_another_grid_is_not_evaluated():
    """A whole model whose ViT backbone is in another codebase's layout and learned for
    another grid: load_from (fine-tuning) takes its tables resampled, the fit check that
    ``tools/test.py`` runs names them with the file's shapes."""
    from types import SimpleNamespace

    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    from mmvtx.engine import CheckpointFitHook, ConvertCheckpointHook
    from mmvtx.utils.checkpoint import CheckpointMismatchError

    def detector(backbone):
        model = torch.nn.Module()
        model.backbone = backbone
        return model

    released = {'state_dict': {f'backbone.{k}': v for k, v in _hf_vitdet().state_dict().items()}}
    # the levels at strides 16 and 32 have no weights of their own: the file is the whole model
    model = detector(_vitdet(out_indices=(2, 3)))  # the grids it was learned for: evaluated
    runner = SimpleNamespace(model=model, _load_from='released.pth',
                             hooks=[ConvertCheckpointHook(), CheckpointFitHook()])
    checkpoint = {'state_dict': dict(released['state_dict'])}
    for hook in runner.hooks:
        hook.after_load_checkpoint(runner, checkpoint)
    _load_checkpoint_to_model(model, checkpoint, strict=True)
    model = detector(ViT('vitdet-b', **DIMS, img_size=224, rel_pos_img_size=256, window_size=4,
                         global_attn_indexes=(1, 3), drop_path_rate=0.0, out_indices=(2, 3)))
    runner.model = model
    checkpoint = {'state_dict': dict(released['state_dict'])}
    with pytest.raises(CheckpointMismatchError,
                       match=r'backbone\.blocks\.1\.attn\.rel_pos_h: checkpoint \(15, 32\) '
                             r'vs model \(31, 32\)'):
        for hook in runner.hooks:
            hook.after_load_checkpoint(runner, checkpoint)
    ConvertCheckpointHook().after_load_checkpoint(runner, checkpoint)  # load_from: resampled
    _load_checkpoint_to_model(model, checkpoint, strict=True)


# ------------------------------------------------------------------------------------ SAM
def _hf_sam():
    from transformers import SamVisionConfig, SamVisionModel
    cfg = SamVisionConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                          image_size=128, patch_size=16, window_size=4,
                          global_attn_indexes=(1, 3), mlp_dim=512, output_channels=32)
    ref = SamVisionModel(cfg).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            p.add_(torch.randn_like(p) * (0.02 if 'pos_embed' not in n else 0.5))
    return ref


def _sam_authors_layout(hf_sd):
    """segment-anything's names (``image_encoder.``, ``mlp.lin1``, 1 x h x w x C position
    embedding), with a stand-in for the rest of SAM."""
    out = {'prompt_encoder.point_embeddings.0.weight': torch.zeros(1, 256)}
    for k, v in hf_sd.items():
        k = (k.replace('vision_encoder.', 'image_encoder.')
             .replace('patch_embed.projection', 'patch_embed.proj').replace('layers.', 'blocks.')
             .replace('layer_norm1', 'norm1').replace('layer_norm2', 'norm2'))
        out[k] = v.clone()
    return out


def test_sam_image_encoder_matches_transformers():
    ref = _hf_sam()
    ours = ViT('sam-b', **DIMS, img_size=128, window_size=4, global_attn_indexes=(1, 3),
               drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(ours, ref.state_dict()).source == 'transformers-sam'
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        last = ref(x, output_hidden_states=True).hidden_states[-1]  # before SAM's neck
        outs = ours(x)
    _assert_levels(outs, _levels(ours, [last.permute(0, 3, 1, 2)] * 4, 128, 128))
    authors = ViT('sam-b', **DIMS, img_size=128, window_size=4, global_attn_indexes=(1, 3),
                  drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(authors, _sam_authors_layout(ref.state_dict())).source \
        == 'sam'
    authors.pyramid.load_state_dict(ours.pyramid.state_dict())  # not part of any release
    with torch.no_grad():
        _assert_levels(authors(x), outs)
        # SAM's encoder is fixed to 1024 px (here 128); mmvtx resizes its position embedding
        assert authors(torch.randn(1, 3, 96, 160))[2].shape == (1, 128, 6, 10)


# --------------------------------------------------------------------------------- DINOv2
def _hf_dinov2(registers=0, **kw):
    if registers:
        from transformers import Dinov2WithRegistersConfig as Config
        from transformers import Dinov2WithRegistersModel as Model
        kw['num_register_tokens'] = registers
    else:
        from transformers import Dinov2Config as Config
        from transformers import Dinov2Model as Model
    kw.setdefault('patch_size', 14)
    cfg = Config(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, image_size=112,
                 layer_norm_eps=1e-6, drop_path_rate=0.0, **kw)
    ref = Model(cfg).eval()
    return jitter_(ref)


def test_a_checkpoint_of_another_patch_size_says_which_to_build():
    """DINOv2's patch-14 weights given to a patch-16 ViT were refused naming only the shape of
    patch_embed.proj.weight: the error says the patch size to build with, and the ViT built
    with it loads them."""
    ref = _hf_dinov2()
    arch = dict(embed_dims=128, num_layers=4, num_heads=4)
    with pytest.raises(CheckpointMismatchError,
                       match=r'(?s)patch_embed\.proj\.weight: checkpoint \(128, 3, 14, 14\).*'
                             r"patches are 14x14 pixels, the model's 16x16: build the ViT with "
                             r'patch_size=14'):
        load_backbone_checkpoint(ViT(arch, img_size=112, layer_scale_init=1e-5),
                                 ref.state_dict())
    load_backbone_checkpoint(ViT(arch, img_size=112, patch_size=14, layer_scale_init=1e-5),
                             ref.state_dict())


def _dinov2_authors_layout(hf_sd):
    """facebookresearch/dinov2 names (timm's, ls1.gamma, mlp.w12/w3 for SwiGLU,
    register_tokens)."""
    sd = {k: v.clone() for k, v in hf_sd.items()}
    out = {}
    for k, v in sd.items():
        k = (k.replace('embeddings.cls_token', 'cls_token')
             .replace('embeddings.mask_token', 'mask_token')
             .replace('embeddings.register_tokens', 'register_tokens')
             .replace('embeddings.position_embeddings', 'pos_embed')
             .replace('embeddings.patch_embeddings.projection', 'patch_embed.proj')
             .replace('encoder.layer.', 'blocks.').replace('attention.o_proj', 'attn.proj')
             .replace('layer_scale1.lambda1', 'ls1.gamma')
             .replace('layer_scale2.lambda1', 'ls2.gamma').replace('layernorm.', 'norm.')
             .replace('mlp.down_proj', 'mlp.w3'))
        out[k] = v
    for k in [k for k in out if '.attention.q_proj.' in k]:
        head, tail = k.split('.attention.q_proj.')
        out[f'{head}.attn.qkv.{tail}'] = torch.cat([out.pop(f'{head}.attention.{p}_proj.{tail}')
                                                    for p in 'qkv'])
    for k in [k for k in out if '.mlp.gate_proj.' in k]:
        head, tail = k.split('.mlp.gate_proj.')
        out[f'{head}.mlp.w12.{tail}'] = torch.cat([out.pop(k),
                                                   out.pop(f'{head}.mlp.up_proj.{tail}')])
    out['mask_token'] = out['mask_token'].reshape(1, -1)
    return out


def _dinov2_expected(ours, ref, x, registers, layers):
    """DINOv2's maps as its own backbone defines them (the final LayerNorm on each chosen
    layer's patch tokens), at the native stride 14, then mmvtx's documented stride-16
    resampling and pyramid."""
    H, W = x.shape[-2:]
    with torch.no_grad():
        hidden = ref(x, output_hidden_states=True).hidden_states
        maps = [_tokens_to_map(ref.layernorm(hidden[i + 1])[:, 1 + registers:], H // 14, W // 14)
                for i in layers]
        maps = [ours._to_stride16(m, H, W) for m in maps]
    return _levels(ours, maps, H, W)


@pytest.mark.parametrize('registers,size', [(0, (112, 112)), (0, (98, 154)),
                                            (4, (112, 112)), (4, (98, 154))])
def test_dinov2_matches_transformers(registers, size):
    ref = _hf_dinov2(registers)
    arch = 'dinov2-reg-b' if registers else 'dinov2-b'
    # transformers resamples the position embedding without DINOv2's 0.1 offset
    ours = ViT(arch, **DIMS, img_size=112, feature_layers=(0, 1, 2, 3),
               interpolate_offset=0.0, drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(ours, ref.state_dict()).source == 'transformers-dinov2'
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        outs = ours(x)
    _assert_levels(outs, _dinov2_expected(ours, ref, x, registers, (0, 1, 2, 3)))
    authors = ViT(arch, **DIMS, img_size=112, feature_layers=(0, 1, 2, 3),
                  interpolate_offset=0.0, drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(authors, _dinov2_authors_layout(ref.state_dict())).source \
        == 'timm'
    authors.pyramid.load_state_dict(ours.pyramid.state_dict())  # not part of any release
    with torch.no_grad():
        _assert_levels(authors(x), outs)


def _timm_dinov2_layout(authors_sd):
    """timm's DINOv2 checkpoints (its _convert_dinov2): no mask token; with registers a
    no_embed_class model (reg_token, the [CLS] position folded into cls_token, pos_embed of
    the patches only); ViT-g's SwiGLU packed as mlp.fc1 / mlp.fc2."""
    sd = {k: v for k, v in authors_sd.items() if k != 'mask_token'}
    if 'register_tokens' in sd:
        sd['reg_token'] = sd.pop('register_tokens')
        sd['cls_token'] = sd['cls_token'] + sd['pos_embed'][:, :1]
        sd['pos_embed'] = sd['pos_embed'][:, 1:]
    return {k.replace('.mlp.w12.', '.mlp.fc1.').replace('.mlp.w3.', '.mlp.fc2.'): v
            for k, v in sd.items()}


@pytest.mark.parametrize('kind', ['reg', 'swiglu'])
def test_timm_dinov2_layouts_match_transformers(kind):
    """timm's DINOv2 files: registers (reg_token, no [CLS] slot in pos_embed) and ViT-g's
    packed SwiGLU (mlp.fc1/fc2; was refused as missing mlp.w12/w3)."""
    kw = dict(img_size=112, feature_layers=(0, 1, 2, 3), interpolate_offset=0.0,
              drop_path_rate=0.0)
    if kind == 'reg':
        ref, registers, arch = _hf_dinov2(4), 4, 'dinov2-reg-b'
    else:
        ref, registers, arch = _hf_dinov2(use_swiglu_ffn=True), 0, 'dinov2-g'
        kw['mlp_hidden_dims'] = ref.encoder.layer[0].mlp.down_proj.in_features
    ours = ViT(arch, **DIMS, **kw).eval()
    sd = _timm_dinov2_layout(_dinov2_authors_layout(ref.state_dict()))
    assert load_backbone_checkpoint(ours, sd).source == 'timm'
    x = torch.randn(1, 3, 98, 154)
    with torch.no_grad():
        _assert_levels(ours(x), _dinov2_expected(ours, ref, x, registers, (0, 1, 2, 3)))


def test_dinov2_swiglu_matches_transformers():
    ref = _hf_dinov2(use_swiglu_ffn=True)
    hidden = ref.encoder.layer[0].mlp.down_proj.in_features  # DINOv2's 2/3 rule, rounded to 8
    ours = ViT('dinov2-g', **DIMS, img_size=112, mlp_hidden_dims=hidden, interpolate_offset=0.0,
               out_indices=(2,), drop_path_rate=0.0).eval()
    load_backbone_checkpoint(ours, ref.state_dict())
    x = torch.randn(1, 3, 126, 98)
    with torch.no_grad():
        _assert_levels(ours(x), _dinov2_expected(ours, ref, x, 0, (3,)))
    authors = ViT('dinov2-g', **DIMS, img_size=112, mlp_hidden_dims=hidden,
                  interpolate_offset=0.0, out_indices=(2,), drop_path_rate=0.0).eval()
    load_backbone_checkpoint(authors, _dinov2_authors_layout(ref.state_dict()))
    authors.pyramid.load_state_dict(ours.pyramid.state_dict())
    with torch.no_grad():
        _assert_levels(authors(x), ours(x))


def test_dinov2_position_offset_as_the_authors_resample():
    """DINOv2's first release resamples its position embedding with scale (n + 0.1) / N; the
    preset does, transformers does not: the two differ off the native size only."""
    ref = _hf_dinov2()
    ours = ViT('dinov2-b', **DIMS, img_size=112, drop_path_rate=0.0).eval()
    load_backbone_checkpoint(ours, ref.state_dict())
    pos = ours.pos_embed[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    authors = F.interpolate(pos, scale_factor=((11 + 0.1) / 8, (7 + 0.1) / 8), mode='bicubic')
    from mmvtx.models.layers.pos_embed import resize_pos_embed
    got = resize_pos_embed(ours.pos_embed, (8, 8), (11, 7), 1, offset=0.1)[:, 1:]
    assert torch.allclose(got, authors.flatten(2).transpose(1, 2), atol=1e-6)
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        _assert_levels(ours(x), _dinov2_expected(ours, ref, x, 0, (3,) * 4))


def test_load_time_position_resize_follows_the_family():
    """A checkpoint's position embedding resized at load to another img_size is resampled as
    the family resamples it (it was plain bicubic): with registers antialiased, so at an input
    of img_size the maps are transformers' Dinov2WithRegistersModel's (non-square, downsampled
    8x8 -> 4x6); the first release with the authors' offset (scale (n + 0.1) / N)."""
    ref = _hf_dinov2(4)
    ours = ViT('dinov2-reg-b', **DIMS, img_size=(56, 84), feature_layers=(0, 1, 2, 3),
               drop_path_rate=0.0).eval()
    load_backbone_checkpoint(ours, ref.state_dict())
    x = torch.randn(1, 3, 56, 84)
    with torch.no_grad():
        _assert_levels(ours(x), _dinov2_expected(ours, ref, x, 4, (0, 1, 2, 3)))
    ref = _hf_dinov2()
    ours = ViT('dinov2-b', **DIMS, img_size=56, drop_path_rate=0.0)
    load_backbone_checkpoint(ours, ref.state_dict())
    pos = ref.embeddings.position_embeddings[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    authors = F.interpolate(pos, scale_factor=(4.1 / 8, 4.1 / 8), mode='bicubic')
    assert torch.allclose(ours.pos_embed[:, 1:], authors.flatten(2).transpose(1, 2), atol=1e-6)


def test_stride14_map_resampled_pixel_aligned():
    """A map whose value is the pixel x of each cell centre ((j + 0.5) * 14) becomes the pixel x
    of the stride-16 cell centres ((i + 0.5) * 16) inside the covered extent."""
    ours = ViT('dinov2-s', embed_dims=8, num_layers=1, num_heads=2, img_size=112)
    H, W = 100, 300
    w = math.ceil(W / 14)
    x_centres = ((torch.arange(w) + 0.5) * 14).expand(1, 1, 4, w)
    out = ours._to_stride16(x_centres.clone(), H, W)
    assert out.shape[-2:] == (math.ceil(H / 16), math.ceil(W / 16))
    inside = (torch.arange(out.shape[-1]) + 0.5) * 16 <= (w - 0.5) * 14
    assert torch.allclose(out[0, 0, 0, inside], ((torch.arange(out.shape[-1]) + 0.5) * 16)[inside],
                          atol=1e-4)


@pytest.mark.parametrize('H,W', [(37, 91), (17, 28), (100, 56)])
def test_stride14_map_pixel_aligned_where_the_grids_coincide(H, W):
    """Where an axis has as many patches of 14 as cells of 16 (37 px: 3 and 3), the map is
    still resampled to the stride-16 cell centres (PyTorch's eager ``upsample_bilinear2d``
    copies such an axis whatever its scale), and a compiled model computes the same."""
    ours = ViT('dinov2-s', embed_dims=8, num_layers=1, num_heads=2, img_size=112)
    h, w = math.ceil(H / 14), math.ceil(W / 14)
    ys = ((torch.arange(h) + 0.5) * 14).view(1, 1, h, 1).expand(1, 1, h, w)
    xs = ((torch.arange(w) + 0.5) * 14).view(1, 1, 1, w).expand(1, 1, h, w)
    out = ours._to_stride16(torch.cat([ys, xs], 1), H, W)
    oh, ow = math.ceil(H / 16), math.ceil(W / 16)
    assert out.shape == (1, 2, oh, ow)
    for axis, n, covered in ((2, oh, (h - 0.5) * 14), (3, ow, (w - 0.5) * 14)):
        centres = (torch.arange(n) + 0.5) * 16
        inside = (centres >= 7) & (centres <= covered)
        got = out[0, axis - 2].movedim(axis - 2, 0)[:, 0]
        assert torch.allclose(got[inside], centres[inside], atol=1e-4), (axis, got, centres)
    feat = torch.randn(2, 3, h, w)
    torch._dynamo.reset()
    compiled = torch.compile(lambda f: ours._to_stride16(f, H, W), backend='aot_eager')(feat)
    torch._dynamo.reset()
    assert (compiled - ours._to_stride16(feat, H, W)).abs().max() <= 1e-6


# --------------------------------------------------------------------------------- DINOv3
def _hf_dinov3(**kw):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel
    cfg = DINOv3ViTConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                          intermediate_size=512, patch_size=16, image_size=224,
                          num_register_tokens=4, layerscale_value=1e-5, **kw)
    return jitter_(DINOv3ViTModel(cfg).eval())


def _dinov3_authors_layout(hf_sd):
    """facebookresearch/dinov3 names: storage_tokens, fused qkv with a key bias masked by
    ``bias_mask`` (random here: it must be masked), rope periods, ls1.gamma."""
    out = {}
    for k, v in hf_sd.items():
        k = (k.replace('embeddings.cls_token', 'cls_token')
             .replace('embeddings.mask_token', 'mask_token')
             .replace('embeddings.register_tokens', 'storage_tokens')
             .replace('embeddings.patch_embeddings', 'patch_embed.proj')
             .replace('model.layer.', 'blocks.').replace('attention.o_proj', 'attn.proj')
             .replace('layer_scale1.lambda1', 'ls1.gamma')
             .replace('layer_scale2.lambda1', 'ls2.gamma')
             .replace('mlp.up_proj', 'mlp.fc1').replace('mlp.down_proj', 'mlp.fc2'))
        out[k] = v.clone()
    for k in [k for k in out if '.attention.q_proj.weight' in k]:
        head = k.split('.attention.')[0]
        out[f'{head}.attn.qkv.weight'] = torch.cat(
            [out.pop(f'{head}.attention.{p}_proj.weight') for p in 'qkv'])
        q, v = out.pop(f'{head}.attention.q_proj.bias'), out.pop(f'{head}.attention.v_proj.bias')
        out[f'{head}.attn.qkv.bias'] = torch.cat([q, torch.randn_like(q), v])
        out[f'{head}.attn.qkv.bias_mask'] = torch.cat([torch.ones_like(q), torch.zeros_like(q),
                                                       torch.ones_like(v)])
    out['rope_embed.periods'] = torch.ones(8)
    return out


@pytest.mark.parametrize('size', [(128, 128), (96, 160)])
def test_dinov3_matches_transformers(size):
    ref = _hf_dinov3()
    ours = ViT('dinov3-b', **DIMS, feature_layers=(0, 1, 2, 3), drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(ours, ref.state_dict()).source == 'transformers-dinov3'
    x = torch.randn(2, 3, *size)
    H, W = size
    with torch.no_grad():
        hidden = ref(x, output_hidden_states=True).hidden_states
        maps = [_tokens_to_map(ref.norm(hidden[i + 1])[:, 5:], H // 16, W // 16)
                for i in range(4)]
        outs = ours(x)
    _assert_levels(outs, _levels(ours, maps, H, W))
    authors = ViT('dinov3-b', **DIMS, feature_layers=(0, 1, 2, 3), drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(authors, _dinov3_authors_layout(ref.state_dict())).source \
        == 'dinov3'
    authors.pyramid.load_state_dict(ours.pyramid.state_dict())  # not part of any release
    with torch.no_grad():
        _assert_levels(authors(x), outs)


def test_dinov3_gated_mlp_matches_transformers():
    ref = _hf_dinov3(use_gated_mlp=True, hidden_act='silu')  # as the ViT-H+ release
    ours = ViT('dinov3-b', **DIMS, mlp_type='swiglu', mlp_hidden_dims=512, out_indices=(2,),
               drop_path_rate=0.0).eval()
    load_backbone_checkpoint(ours, ref.state_dict())
    x = torch.randn(1, 3, 80, 112)
    with torch.no_grad():
        last = ref(x).last_hidden_state[:, 5:]
        _assert_levels(ours(x), _levels(ours, [_tokens_to_map(last, 5, 7)], 80, 112))


# -------------------------------------------------------------------------------- DeiT-III
@pytest.mark.parametrize('size', [(112, 112), (96, 160)])
def test_deit3_authors_layout_matches_a_layer_scale_vit(size):
    """DeiT-III's release (timm names, LayerScale as gamma_1/gamma_2) is a ViT with LayerScale:
    the same weights in transformers' Dinov2Model (which is exactly that, at patch 16) give the
    same maps; timm's own names (ls1.gamma) load too."""
    ref = jitter_(_hf_dinov2(patch_size=16).eval())
    authors = _dinov2_authors_layout(ref.state_dict())
    authors = {k.replace('.ls1.gamma', '.gamma_1').replace('.ls2.gamma', '.gamma_2'): v
               for k, v in authors.items() if k != 'mask_token'}
    authors['head.weight'] = torch.zeros(10, 128)
    ours = ViT('deit3-b', **DIMS, img_size=112, out_indices=(2,), drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(ours, authors).source == 'deit3'
    x = torch.randn(2, 3, *size)
    H, W = size
    with torch.no_grad():
        last = ref(x).last_hidden_state[:, 1:]
        _assert_levels(ours(x), _levels(ours, [_tokens_to_map(last, H // 16, W // 16)], H, W))
    timm = {k.replace('.gamma_1', '.ls1.gamma').replace('.gamma_2', '.ls2.gamma'): v
            for k, v in authors.items()}
    assert load_backbone_checkpoint(ours, timm).source == 'timm'


def _mmpretrain_layout(authors_sd, deit3=False):
    """mmpretrain's VisionTransformer / DeiT3 names (its deit3_to_mmpretrain converter; DINOv2
    as its vit-*-p14_dinov2 configs build it): layers.N.ln1/ln2, LayerScale as
    attn.gamma1.weight / ffn.gamma2.weight, MLP as ffn.layers.0.0 / ffn.layers.1, SwiGLU as
    ffn.w12 / ffn.w3, final norm ln1, the whole classifier's backbone. prefix. DeiT3 keeps no
    position for [CLS] (its pos_embed covers the patches only)."""
    out = {}
    for k, v in authors_sd.items():
        if k == 'mask_token':
            continue
        k = (k.replace('blocks.', 'layers.').replace('.norm1.', '.ln1.')
             .replace('.norm2.', '.ln2.').replace('mlp.fc1', 'ffn.layers.0.0')
             .replace('mlp.fc2', 'ffn.layers.1').replace('mlp.w12', 'ffn.w12')
             .replace('mlp.w3', 'ffn.w3').replace('ls1.gamma', 'attn.gamma1.weight')
             .replace('ls2.gamma', 'ffn.gamma2.weight')
             .replace('patch_embed.proj', 'patch_embed.projection'))
        if k.startswith('norm.'):
            k = 'ln1.' + k[len('norm.'):]
        if deit3 and k == 'pos_embed':
            v = v[:, 1:]
        out['backbone.' + k] = v
    out['head.layers.head.weight'] = torch.zeros(10, 128)
    return out


@pytest.mark.parametrize('kind', ['dinov2-swiglu', 'deit3'])
def test_mmpretrain_layer_scale_layouts_match_transformers(kind):
    """mmpretrain's DINOv2 (SwiGLU) and DeiT-III checkpoints name LayerScale attn.gamma1 /
    ffn.gamma2 and SwiGLU ffn.w12 / ffn.w3 (were refused as unexpected keys)."""
    if kind == 'deit3':
        ref = _hf_dinov2(patch_size=16)
        with torch.no_grad():  # DeiT-III adds no position to [CLS]
            ref.embeddings.position_embeddings[:, 0] = 0
        ours = ViT('deit3-b', **DIMS, img_size=112, out_indices=(2,), drop_path_rate=0.0)
        patch, size = 16, (96, 144)
    else:
        ref = _hf_dinov2(use_swiglu_ffn=True)
        hidden = ref.encoder.layer[0].mlp.down_proj.in_features
        ours = ViT('dinov2-g', **DIMS, img_size=112, mlp_hidden_dims=hidden,
                   interpolate_offset=0.0, out_indices=(2,), drop_path_rate=0.0)
        patch, size = 14, (112, 112)
    sd = _mmpretrain_layout(_dinov2_authors_layout(ref.state_dict()), deit3=kind == 'deit3')
    assert load_backbone_checkpoint(ours.eval(), sd).source == 'mmpretrain'
    x = torch.randn(2, 3, *size)
    H, W = size
    with torch.no_grad():
        last = ref(x).last_hidden_state[:, 1:]
        feat = ours._to_stride16(_tokens_to_map(last, H // patch, W // patch), H, W)
        _assert_levels(ours(x), _levels(ours, [feat], H, W))


# ----------------------------------------------------------- relative position gradients
def _rel_pos_reference(attn, x, hw):
    """ViTDet's attention written out in float64: logits + q.R_h + q.R_w, softmax, values."""
    from mmvtx.models.layers.position import rel_pos_for
    B, N, C = x.shape
    heads, d = attn.num_heads, attn.head_dim
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).view(B, N, 3, heads, d)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    logits = (q * d ** -0.5) @ k.transpose(-2, -1)
    h, w = hw
    Rh, Rw = rel_pos_for(h, attn.rel_pos_h), rel_pos_for(w, attn.rel_pos_w)
    r_q = q.reshape(B, heads, h, w, d)
    rel_h = torch.einsum('bnhwc,hkc->bnhwk', r_q, Rh)
    rel_w = torch.einsum('bnhwc,wkc->bnhwk', r_q, Rw)
    logits = (logits.view(B, heads, h, w, h, w) + rel_h[..., None] +
              rel_w[..., None, :]).view(B, heads, N, N)
    y = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
    return F.linear(y, attn.proj.weight, attn.proj.bias)


@pytest.mark.parametrize('kernel', ['recompute', 'sdpa'])
@pytest.mark.parametrize('table,hw,blocks', [(7, (7, 5), 1), (5, (6, 9), 1), (9, (8, 8), 3)])
def test_rel_pos_gradients_match_the_formula(table, hw, blocks, kernel, monkeypatch):
    """Training-mode values and gradients (input, projections, both tables) of the attention
    with decomposed relative positions equal autograd through the formula in float64, through
    either bias-gradient kernel (``'sdpa'``: the term expanded to a mask with a gradient, the
    CUDA route, PyTorch's math path on CPU; ``'recompute'``); tables interpolated when learned
    for another size (5 -> 6 x 9); queries split in blocks (``blocks`` > 1, recompute)."""
    import sys

    from mmvtx.models.backbones.vit import Attention
    attention_mod = sys.modules['mmvtx.models.layers.attention']
    monkeypatch.setenv('MMVTX_BIAS_GRAD', kernel)
    torch.manual_seed(0)
    attn = Attention(32, 4, rel_pos_size=((table + 1) // 2, (table + 1) // 2)).double().train()
    jitter_(attn, 0.5)
    N = hw[0] * hw[1]
    if blocks > 1:  # at most ~N / blocks query rows of logits at a time
        monkeypatch.setattr(attention_mod, 'BLOCK_LOGITS', 2 * 4 * N * (N // blocks))
    x = torch.randn(2, N, 32, dtype=torch.float64, requires_grad=True)
    ours = attn(x, hw=hw)
    ref = _rel_pos_reference(attn, x, hw)
    assert (ours - ref).abs().max() < 1e-10
    params = [x, attn.rel_pos_h, attn.rel_pos_w, attn.qkv.weight, attn.proj.weight]
    g = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, params, g), torch.autograd.grad(ref, params, g)):
        assert (a - b).abs().max() < 1e-10


@pytest.mark.parametrize('budget,route', [(None, 'sdpa'), (2 * 4 * 63 * 63 - 1, 'recompute')])
def test_rel_pos_takes_sdpa_only_below_its_mask_budget(budget, route, monkeypatch):
    """Under ``MMVTX_BIAS_GRAD=sdpa`` the decomposed term is expanded to a ``heads x N x L``
    mask only while it has at most ``SDPA_REL_POS_LOGITS`` elements (a global block at
    detection sizes would hold hundreds of MB per image); above it the call recomputes."""
    import sys

    from mmvtx.models.backbones.vit import Attention
    attention_mod = sys.modules['mmvtx.models.layers.attention']
    monkeypatch.setenv('MMVTX_BIAS_GRAD', 'sdpa')
    if budget is not None:
        monkeypatch.setattr(attention_mod, 'SDPA_REL_POS_LOGITS', budget)
    calls = []
    apply = attention_mod._BiasedAttention.apply
    monkeypatch.setattr(attention_mod._BiasedAttention, 'apply',
                        lambda *a: calls.append(1) or apply(*a))
    attn = Attention(32, 4, rel_pos_size=(4, 4)).train()
    jitter_(attn, 0.5)
    x = torch.randn(2, 63, 32, requires_grad=True)  # 2 images x 4 heads x 63 x 63 logits
    out = attn(x, hw=(7, 9))
    out.square().sum().backward()
    assert ('recompute' if calls else 'sdpa') == route
    assert attn.rel_pos_h.grad.abs().sum() > 0 and attn.rel_pos_w.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ contract
FAMILIES = ['vitdet-b', 'sam-b', 'dinov2-b', 'dinov2-reg-g', 'dinov3-b', 'deit3-b']


@pytest.mark.parametrize('arch', FAMILIES)
@pytest.mark.parametrize('H,W', [(1, 1), (33, 65), (97, 131)])
def test_family_shapes_and_gradients(arch, H, W):
    kw = dict(embed_dims=32, num_layers=2, num_heads=2, drop_path_rate=0.0)
    if arch.startswith(('vitdet', 'sam')):
        kw.update(window_size=3, global_attn_indexes=(1,), img_size=64)
    if arch.startswith('dinov2'):
        kw.update(img_size=56, mlp_hidden_dims=48 if arch.endswith('g') else None)
    model = ViT(arch, **kw).train()
    jitter_(model)
    x = torch.randn(2, 3, H, W, requires_grad=True)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [
        (2, c, math.ceil(H / s), math.ceil(W / s)) for c, s in
        zip((8, 16, 32, 32), (4, 8, 16, 32))]
    assert all(o.is_contiguous() for o in outs)
    sum(o.square().mean() for o in outs).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_family_presets_and_bad_values():
    m = ViT('dinov2-reg-b')
    assert (m.patch_size, m.num_register_tokens, m.pretrain_grid) == (14, 4, (37, 37))
    assert isinstance(m.blocks[0].ls1.gamma, torch.nn.Parameter)
    m = ViT('vitdet-l', num_layers=24)
    assert [i for i, b in enumerate(m.blocks) if b.window_size == 0] == [5, 11, 17, 23]
    assert m.blocks[5].attn.rel_pos_h.shape == (127, 64)
    assert m.blocks[0].attn.rel_pos_h.shape == (27, 64)
    m = ViT('dinov3-l')
    assert m.pos_embed is None and m.blocks[0].attn.q_bias is not None
    m = ViT('dinov2-g')
    assert m.blocks[0].mlp.w12.out_features == 2 * 4096
    with pytest.raises(ValueError, match='qkv_bias'):
        ViT('base', qkv_bias='kv')
    with pytest.raises(ValueError, match='use_rel_pos'):
        ViT('base', use_rel_pos=True)  # global attention over a [CLS] token
    with pytest.raises(ValueError, match='window_size'):
        ViT('dinov3-b', window_size=7)
    with pytest.raises(ValueError, match='unknown arch'):
        ViT('dinov4-b')


@pytest.mark.parametrize('arch', ['vitdet-b', 'sam-b'])
def test_explicit_window_size_0_overrides_the_presets_global_blocks(arch):
    """``window_size=0`` (every block global) set explicitly on a windowed preset wins over
    the preset: its global blocks (ViTDet's 2/5/8/11) only name the blocks among windowed
    ones that are not windowed, and are dropped with the windows."""
    kw = dict(embed_dims=32, num_layers=12, num_heads=2, img_size=64, drop_path_rate=0.0)
    model = ViT(arch, **kw, window_size=0).eval()
    spelled = ViT(arch, **kw, window_size=0, global_attn_indexes=()).eval()
    assert all(b.window_size == 0 for b in model.blocks)
    spelled.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        for a, b in zip(model(x), spelled(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_presets_global_blocks_beyond_another_depth_are_named():
    """A windowed preset at another depth: the error names the preset whose global blocks
    (not given by the user) do not fit, and the argument that sets them."""
    with pytest.raises(ValueError, match=r"arch='vitdet-b'.*\(2, 5, 8, 11\).*num_layers=6.*"
                                         r'global_attn_indexes'):
        ViT('vitdet-b', num_layers=6)
    # given explicitly, the user's own indices are checked as before
    with pytest.raises(ValueError, match=r'global_attn_indexes\[...\]=7'):
        ViT('vitdet-b', num_layers=6, global_attn_indexes=(1, 7))
    assert [i for i, b in enumerate(ViT('vitdet-b', num_layers=6, global_attn_indexes=(2, 5))
                                    .blocks) if b.window_size == 0] == [2, 5]


def _autograd_nodes(outs):
    seen, todo, names = set(), [o.grad_fn for o in outs], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return names


@pytest.mark.parametrize('arch, kw', [
    ('base', dict(img_size=64)),
    ('dinov2-b', dict(img_size=112)),  # DINOv2's offset: a scale factor, not a size
    ('dinov2-reg-b', dict(img_size=112)),  # antialiased (the input grid is smaller)
    ('vitdet-b', dict(img_size=64, window_size=3, global_attn_indexes=(1,))),
])
def test_deterministic_mode_resamples_tables_without_interpolate_backward(arch, kw):
    """``tools/train.py --deterministic`` (``torch.use_deterministic_algorithms``): PyTorch
    refuses ``F.interpolate``'s backward on CUDA there, so the run-time resizing of the
    position embedding (bicubic, DINOv2's offset and antialiasing) and of ViTDet's relative
    position tables (linear) is done by matrix products instead: no upsampling in the graph,
    the same outputs and gradients."""
    model = jitter_(ViT(arch, embed_dims=32, num_layers=2, num_heads=2, drop_path_rate=0.0,
                        **kw).train())
    x = torch.randn(2, 3, 70, 42)
    results = []
    previous = torch.are_deterministic_algorithms_enabled()
    for deterministic in (False, True):
        torch.use_deterministic_algorithms(deterministic)
        try:
            model.zero_grad()
            outs = model(x)
            nodes = _autograd_nodes(outs)
            sum(o.square().mean() for o in outs).backward()
        finally:
            torch.use_deterministic_algorithms(previous)
        upsampling = {n for n in nodes if 'Upsample' in n}
        assert bool(upsampling) != deterministic, (deterministic, upsampling)
        results.append((outs, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain, plain_grads), (det, det_grads) = results
    for a, b in zip(plain, det):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for name, g in plain_grads.items():
        torch.testing.assert_close(det_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


# ------------------------------------------------------------- transformers hub (4.x) names
def _to_hub_names(sd, dinov3=False):
    """transformers 5.x names -> the names of the checkpoints on the hub (transformers 4.x):
    DINOv2's query/key/value under ``attention.attention``, ``attention.output.dense``, the
    fused SwiGLU ``weights_in``/``weights_out``; DINOv3's layers without ``model.``."""
    out = {}
    for k, v in sd.items():
        if dinov3:
            out[k.replace('model.layer.', 'layer.')] = v
            continue
        k = (k.replace('attention.q_proj', 'attention.attention.query')
             .replace('attention.k_proj', 'attention.attention.key')
             .replace('attention.v_proj', 'attention.attention.value')
             .replace('attention.o_proj', 'attention.output.dense')
             .replace('mlp.down_proj', 'mlp.weights_out'))
        out[k] = v
    for k in [k for k in out if '.mlp.gate_proj.' in k]:
        head, tail = k.split('.mlp.gate_proj.')
        out[f'{head}.mlp.weights_in.{tail}'] = torch.cat(
            [out.pop(k), out.pop(f'{head}.mlp.up_proj.{tail}')])
    return out


@pytest.mark.parametrize('kind', ['dinov2', 'dinov2-swiglu', 'dinov3'])
def test_hub_names_load_to_the_same_model(kind):
    if kind == 'dinov3':
        ref, arch, kw = _hf_dinov3(), 'dinov3-b', {}
    else:
        swiglu = kind.endswith('swiglu')
        ref = _hf_dinov2(use_swiglu_ffn=swiglu)
        arch, kw = 'dinov2-b', dict(img_size=112)
        if swiglu:
            kw.update(mlp_type='swiglu',
                      mlp_hidden_dims=ref.encoder.layer[0].mlp.down_proj.in_features)
    a, b = (ViT(arch, **DIMS, **kw, drop_path_rate=0.0) for _ in range(2))
    load_backbone_checkpoint(a, ref.state_dict())
    hub = _to_hub_names(ref.state_dict(), dinov3=kind == 'dinov3')
    assert set(hub) != set(ref.state_dict())
    load_backbone_checkpoint(b, hub)
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        if not k.startswith('pyramid'):
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize('protocol', [0, 1, 5])
def test_detectron2_pkl_of_python2s_protocols_is_read(tmp_path, protocol):
    """Python 2's cPickle wrote protocol 0 by default (``(dp0``) or 1 (``}q``) when asked for a
    binary one: such a pickle has no PROTO opcode, so it was refused as 'not a checkpoint file
    ... a web page or an error message saved in its place?'. It loads as protocol 2's does; an
    array of Python objects in it is refused naming its key (was numpy's conversion error).
    Protocol 5 (Python 3.14's default, pickle.HIGHEST_PROTOCOL) writes arrays through numpy's
    ``_frombuffer``: was refused as 'it would build numpy._core.numeric._frombuffer'."""
    import pickle

    sd = _detectron2_layout(_hf_vitdet().state_dict())
    with open(tmp_path / 'model_final.pkl', 'wb') as f:
        pickle.dump({'model': {k: v.numpy() for k, v in sd.items()}, '__author__': 'x'}, f,
                    protocol=protocol)
    from_pkl, from_dict = _vitdet(), _vitdet()
    from_pkl.load_pretrained(str(tmp_path / 'model_final.pkl'))
    load_backbone_checkpoint(from_dict, sd)
    for k, v in from_dict.state_dict().items():
        if not k.startswith('pyramid.'):
            assert torch.equal(from_pkl.state_dict()[k], v), k
    with open(tmp_path / 'objects.pkl', 'wb') as f:
        pickle.dump({'model': {'backbone.net.names': np.array(['a', 1], dtype=object)}}, f,
                    protocol=protocol)
    with pytest.raises(RuntimeError, match=r'model/backbone\.net\.names is an array of Python '
                       r'objects \(dtype object\)'):
        _vitdet().load_pretrained(str(tmp_path / 'objects.pkl'))


@pytest.mark.parametrize('arch', ['dinov2-b', 'dinov2-reg-b'])
def test_img_size_not_a_multiple_of_the_patch_keeps_the_checkpoint_embedding(arch):
    """DINOv2 (patch 14) with img_size=512, the crop of the ADE20K recipes: a 512-px input is
    padded to 518, a 37x37 grid, so the table is 37x37 and a 518-px release's table is used
    as it is. With a floor grid (36x36) it was resampled 37->36 at load and 36->37 again at
    every forward: the maps of a 512-px image were not the release's (max diff ~1.8 here)."""
    kw = dict(embed_dims=32, num_layers=2, num_heads=2, feature_layers=(0, 1, 1, 1),
              drop_path_rate=0.0)
    torch.manual_seed(0)
    release = ViT(arch, img_size=518, **kw).eval()
    with torch.no_grad():
        release.pos_embed.normal_()  # a table that resampling would visibly change
    ours = ViT(arch, img_size=512, **kw).eval()
    assert ours.pretrain_grid == (37, 37)
    load_backbone_checkpoint(ours, release.state_dict())
    torch.testing.assert_close(ours.pos_embed, release.pos_embed, rtol=0, atol=0)
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        for a, b in zip(ours(x), release(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # (h, w) sides alike, and a plain ViT: 232 px at patch 16 is a 15x15 grid
    assert ViT(arch, img_size=(512, 500), **kw).pretrain_grid == (37, 36)
    assert ViT('base', img_size=232, **kw).pretrain_grid == (15, 15)


@pytest.mark.parametrize('kind', ['dinov3', 'dinov2-reg'])
def test_a_transformers_model_without_registers_loads(kind):
    """transformers' DINOv3ViTModel and Dinov2WithRegistersModel built with
    num_register_tokens=0 keep an empty 1 x 0 x C ``register_tokens``: it was refused as an
    unexpected key by a ViT without registers; now the model computes the reference's maps."""
    if kind == 'dinov3':
        from transformers import DINOv3ViTConfig as Config
        from transformers import DINOv3ViTModel as Model
        cfg = Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, patch_size=16, image_size=64,
                     num_register_tokens=0, layerscale_value=0.1)
        size, patch = (48, 112), 16
    else:
        from transformers import Dinov2WithRegistersConfig as Config
        from transformers import Dinov2WithRegistersModel as Model
        cfg = Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14,
                     image_size=56, layer_norm_eps=1e-6, num_register_tokens=0)
        size, patch = (56, 56), 14  # the pretraining size: no resampling of positions
    ref = jitter_(Model(cfg).eval())
    assert ref.state_dict()['embeddings.register_tokens'].shape == (1, 0, 32)
    ours = ViT(f'{kind}-b', embed_dims=32, num_layers=2, num_heads=2, img_size=size[0],
               num_register_tokens=0, out_indices=(2,), drop_path_rate=0.0).eval()
    load_backbone_checkpoint(ours, ref.state_dict())
    x = torch.randn(2, 3, *size)
    H, W = size
    with torch.no_grad():
        tokens = ref(x).last_hidden_state[:, 1:]
        expected = ours._to_stride16(_tokens_to_map(tokens, H // patch, W // patch), H, W)
        got, = ours(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= TOL
