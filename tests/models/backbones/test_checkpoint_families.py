"""Checkpoints of the ViT/Swin-like families users bring to ``init_cfg=dict(type='Pretrained')``:
the architectures no mmvtx backbone computes are refused in one line naming the family and what
differs (in each layout they are released in); those that are the network mmvtx computes load
and give the reference model's features."""
import math

import numpy as np
import pytest
import torch

from mmvtx.models.backbones.cvt import CvT
from mmvtx.models.backbones.swin import SwinTransformer
from mmvtx.models.backbones.vit import ViT
from mmvtx.utils import CheckpointMismatchError
from tests.conftest import jitter_

TOL = 1e-4
HF_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
              image_size=64, patch_size=16, layer_norm_eps=1e-6, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)
ARCH = dict(embed_dims=32, num_layers=2, num_heads=2)


def _t(*shape):
    return torch.zeros(shape or (1,))


def _keys(*names):
    return {k: _t() for k in names}


def _hf(model, config, **kw):
    import transformers
    return getattr(transformers, model)(getattr(transformers, config)(**kw)).state_dict()


def _hf_swin_like(model, config):
    return _hf(model, config, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
               window_size=4)


# (family as the error names it, layout, a function giving the file's state dict)
FAMILIES = [
    ('a BEiT', 'transformers 5.x BeitModel',
     lambda: _hf('BeitModel', 'BeitConfig', **HF_VIT, use_relative_position_bias=True)),
    ('a BEiT', 'transformers 5.x BeitModel, shared bias',
     lambda: _hf('BeitModel', 'BeitConfig', **HF_VIT, use_shared_relative_position_bias=True)),
    ('a BEiT', 'transformers 4.x Data2VecVisionModel',
     lambda: _hf('Data2VecVisionModel', 'Data2VecVisionConfig', **HF_VIT,
                 use_relative_position_bias=True)),
    ('a BEiT', 'timm beit / beitv2 (was refused as a "deit3 checkpoint")',
     lambda: _keys('cls_token', 'patch_embed.proj.weight', 'blocks.0.gamma_1',
                   'blocks.0.gamma_2', 'blocks.0.attn.qkv.weight', 'blocks.0.attn.q_bias',
                   'blocks.0.attn.v_bias', 'blocks.0.attn.relative_position_bias_table',
                   'blocks.0.attn.relative_position_index', 'fc_norm.weight', 'head.weight')),
    ('a BEiT', 'timm / authors, shared bias',
     lambda: _keys('cls_token', 'patch_embed.proj.weight', 'blocks.0.gamma_1',
                   'blocks.0.attn.qkv.weight', 'blocks.0.attn.q_bias',
                   'rel_pos_bias.relative_position_bias_table')),
    ('a BEiT', 'mmpretrain / mmseg BEiT, in a detector',
     lambda: _keys('backbone.cls_token', 'backbone.patch_embed.projection.weight',
                   'backbone.layers.0.gamma_1', 'backbone.layers.0.attn.qkv.weight',
                   'backbone.layers.0.attn.relative_position_bias_table',
                   'decode_head.conv_seg.weight')),
    ('a CLIP image encoder', 'transformers CLIPVisionModel',
     lambda: _hf('CLIPVisionModel', 'CLIPVisionConfig', **HF_VIT)),
    ('a CLIP image encoder', 'OpenAI / open_clip (visual. and the text tower)',
     lambda: _keys('visual.class_embedding', 'visual.positional_embedding', 'visual.conv1.weight',
                   'visual.ln_pre.weight', 'visual.transformer.resblocks.0.attn.in_proj_weight',
                   'visual.ln_post.weight', 'visual.proj', 'token_embedding.weight',
                   'transformer.resblocks.0.attn.in_proj_weight', 'logit_scale')),
    ('a CLIP image encoder', 'timm vit_*_clip_*',
     lambda: _keys('cls_token', 'pos_embed', 'patch_embed.proj.weight', 'norm_pre.weight',
                   'blocks.0.attn.qkv.weight', 'norm.weight', 'head.weight')),
    ('an AIMv2 image encoder', 'transformers Aimv2VisionModel',
     lambda: _hf('Aimv2VisionModel', 'Aimv2VisionConfig', **{
         k: v for k, v in HF_VIT.items() if 'dropout' not in k and k != 'layer_norm_eps'})),
    ('an EVA-02', 'timm eva02_* (SwiGLU fc1_g/fc1_x)',
     lambda: _keys('cls_token', 'pos_embed', 'patch_embed.proj.weight',
                   'blocks.0.attn.q_proj.weight', 'blocks.0.attn.k_proj.weight',
                   'blocks.0.attn.v_proj.weight', 'blocks.0.mlp.fc1_g.weight',
                   'blocks.0.mlp.fc1_x.weight', 'blocks.0.mlp.norm.weight')),
    ('an EVA-02', "the authors' (mlp.ffn_ln)",
     lambda: _keys('cls_token', 'pos_embed', 'patch_embed.proj.weight',
                   'blocks.0.attn.qkv.weight', 'blocks.0.mlp.w1.weight',
                   'blocks.0.mlp.ffn_ln.weight', 'blocks.0.mlp.w3.weight')),
    ('an EVA-02', 'mmpretrain ViTEVA02-S (no inner norm: its rotary tables)',
     lambda: _keys('backbone.cls_token', 'backbone.pos_embed', 'backbone.rope.freqs_cos',
                   'backbone.layers.0.attn.qkv.weight', 'backbone.layers.0.attn.q_bias',
                   'backbone.layers.0.attn.rope.freqs_cos', 'backbone.layers.0.mlp.w12.weight',
                   'backbone.layers.0.mlp.w3.weight', 'backbone.ln1.weight')),
    ('a Hiera', 'transformers HieraModel',
     lambda: _hf('HieraModel', 'HieraConfig', embed_dim=16, depths=[1, 1, 1, 1],
                 num_heads=[1, 1, 1, 1])),
    ('a Hiera', "timm / the authors'",
     lambda: _keys('pos_embed', 'patch_embed.proj.weight', 'blocks.0.attn.qkv.weight',
                   'blocks.1.proj.weight', 'blocks.1.attn.qkv.weight', 'head.fc.weight')),
    ('a hybrid ViT (ViT-R50)', 'timm vit_base_r50_s16_384',
     lambda: _keys('cls_token', 'pos_embed', 'patch_embed.backbone.stem.conv.weight',
                   'patch_embed.proj.weight', 'blocks.0.attn.qkv.weight', 'norm.weight')),
    ('a hybrid ViT (ViT-R50)', 'transformers DPT-hybrid',
     lambda: _keys('dpt.embeddings.cls_token', 'dpt.embeddings.position_embeddings',
                   'dpt.embeddings.backbone.bit.embedder.convolution.weight',
                   'dpt.embeddings.projection.weight',
                   'dpt.encoder.layer.0.attention.attention.query.weight')),
    ('a FocalNet', 'transformers FocalNetModel',
     lambda: _hf('FocalNetModel', 'FocalNetConfig', embed_dim=16, depths=[1, 1, 1, 1])),
    ('a spatial-reduction transformer (PVT, SegFormer MiT, Twins)', 'transformers PvtModel',
     lambda: _hf('PvtModel', 'PvtConfig', hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1],
                 num_attention_heads=[1, 1, 1, 1])),
    ('a spatial-reduction transformer', "mmseg's SegFormer MiT (was taken for a ViT)",
     lambda: {'state_dict': _keys(
         'backbone.layers.0.0.projection.weight', 'backbone.layers.0.1.0.norm1.weight',
         'backbone.layers.0.1.0.attn.attn.in_proj_weight', 'backbone.layers.0.1.0.attn.sr.weight',
         'decode_head.conv_seg.weight')}),
    ('a ConvNeXt', 'transformers ConvNextModel',
     lambda: _hf('ConvNextModel', 'ConvNextConfig', hidden_sizes=[8, 8, 8, 8],
                 depths=[1, 1, 1, 1])),
    ('a ConvNeXt', "mmdet's Mask R-CNN ConvNeXt (state_dict, backbone.)",
     lambda: {'state_dict': _keys(
         'backbone.downsample_layers.0.0.weight', 'backbone.stages.0.0.depthwise_conv.weight',
         'backbone.stages.0.0.pointwise_conv1.weight', 'backbone.stages.0.0.gamma',
         'neck.lateral_convs.0.conv.weight', 'roi_head.bbox_head.fc_cls.weight')}),
    ('a ResNet', "mmdet's Mask R-CNN R-50 (state_dict, backbone.)",
     lambda: {'state_dict': _keys(
         'backbone.conv1.weight', 'backbone.bn1.weight', 'backbone.layer1.0.conv1.weight',
         'backbone.layer1.0.bn1.weight', 'neck.lateral_convs.0.conv.weight',
         'rpn_head.rpn_conv.weight')}),
    ('a ResNet', 'transformers ResNetModel',
     lambda: _hf('ResNetModel', 'ResNetConfig', hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1],
                 embedding_size=8)),
]


@pytest.mark.parametrize('what,layout,make', FAMILIES, ids=[f[1] for f in FAMILIES])
def test_other_families_are_named_in_one_line(what, layout, make):
    """Each file was refused as another family's ('it holds the weights of a ViT ... Load it
    into a ViT' for a BEiT, CLIP or Hiera given to a Swin), under another layout's
    name ('the deit3 checkpoint does not fit' for a timm BEiT), as a missing key projection
    (transformers' BEiT, data2vec) or as long lists of keys. Every backbone now names the
    family and what differs, in one line."""
    ckpt = make()
    models = (ViT(arch=ARCH, img_size=64),
              SwinTransformer(arch=dict(embed_dims=16, depths=(1, 1, 1, 1),
                                        num_heads=(1, 1, 1, 1)), window_size=4),
              CvT(embed_dims=(16, 16, 16), depths=(1, 1, 1), num_heads=(1, 1, 1)))
    for model in models:
        with pytest.raises(CheckpointMismatchError) as e:
            model.load_pretrained(ckpt)
        msg = str(e.value)
        assert msg.startswith(f'{type(model).__name__}: {what}'), (layout, msg)
        assert 'which no mmvtx backbone computes' in msg and '\n' not in msg, msg
        assert 'Load it into' not in msg


def _jax_layout(sd: dict, heads: int, big_vision: bool, prefix: str = '', scan: bool = False,
                i21k: bool = False) -> dict:
    """A ViT's weights in timm's names (an mmvtx ViT's state dict) as a JAX release names and
    shapes them: the original/AugReg layout, or big_vision's (blocks numbered from 0,
    ``pos_embedding`` at the top, optionally scanned: stacked along a first axis)."""
    f = {k: v.numpy() for k, v in sd.items()}
    dim = f['patch_embed.proj.weight'].shape[0]
    out = {'embedding/kernel': f['patch_embed.proj.weight'].transpose(2, 3, 1, 0),
           'embedding/bias': f['patch_embed.proj.bias'],
           'pos_embedding' if big_vision else 'Transformer/posembed_input/pos_embedding':
               f['pos_embed'],
           'Transformer/encoder_norm/scale': f['norm.weight'],
           'Transformer/encoder_norm/bias': f['norm.bias']}
    if 'cls_token' in f:
        out['cls'] = f['cls_token']
    if i21k:  # the i21k releases' representation layer and 21k-class head
        out.update({'pre_logits/kernel': np.ones((dim, dim), np.float32),
                    'pre_logits/bias': np.ones(dim, np.float32),
                    'head/kernel': np.ones((dim, 7), np.float32),
                    'head/bias': np.ones(7, np.float32)})
    ln2, mlp, mha = ('LayerNorm_1', 'MlpBlock_0', 'MultiHeadDotProductAttention_0') if \
        big_vision else ('LayerNorm_2', 'MlpBlock_3', 'MultiHeadDotProductAttention_1')
    blocks = sorted({int(k.split('.')[1]) for k in f if k.startswith('blocks.')})
    per_block = []
    for i in blocks:
        p, b = f'blocks.{i}.', {}
        for src, dst in (('norm1', 'LayerNorm_0'), ('norm2', ln2)):
            b[f'{dst}/scale'], b[f'{dst}/bias'] = f[p + src + '.weight'], f[p + src + '.bias']
        for j in range(2):
            b[f'{mlp}/Dense_{j}/kernel'] = f[p + f'mlp.fc{j + 1}.weight'].T
            b[f'{mlp}/Dense_{j}/bias'] = f[p + f'mlp.fc{j + 1}.bias']
        qkv_w, qkv_b = f[p + 'attn.qkv.weight'], f[p + 'attn.qkv.bias']
        for n, name in enumerate(('query', 'key', 'value')):
            b[f'{mha}/{name}/kernel'] = qkv_w[n * dim:(n + 1) * dim].T.reshape(dim, heads, -1)
            b[f'{mha}/{name}/bias'] = qkv_b[n * dim:(n + 1) * dim].reshape(heads, -1)
        b[f'{mha}/out/kernel'] = f[p + 'attn.proj.weight'].T.reshape(heads, -1, dim)
        b[f'{mha}/out/bias'] = f[p + 'attn.proj.bias']
        per_block.append(b)
    if scan:
        out.update({f'Transformer/encoderblock/{k}': np.stack([b[k] for b in per_block])
                    for k in per_block[0]})
    else:
        out.update({f'Transformer/encoderblock_{i}/{k}': v
                    for i, b in zip(blocks, per_block) for k, v in b.items()})
    return {prefix + k: v for k, v in out.items()}


def _map(tokens):
    B, N, C = tokens.shape
    side = math.isqrt(N)
    return tokens.transpose(1, 2).reshape(B, C, side, side)


@pytest.mark.parametrize('layout', ['augreg-i21k', 'big_vision-gap', 'big_vision-scan-cls'])
def test_jax_releases_of_other_layouts_load(layout, tmp_path):
    """JAX ``.npz`` releases beside the original layout: an AugReg i21k file (``pre_logits``
    and a 21k head, dropped), and big_vision's (``params/``, blocks numbered from 0,
    ``pos_embedding`` at the top; a ``gap`` model without ``cls``, which failed with
    ``KeyError: 'cls'``; scanned blocks stacked along a first axis, which were not read). Each
    gives the features of the reference model whose weights it holds (transformers' ViTModel,
    or I-JEPA's ViT without [CLS] for the gap model), and in the offline converter too."""
    from transformers import IJepaConfig, IJepaModel, ViTConfig, ViTModel
    cls = layout != 'big_vision-gap'
    ref = jitter_((ViTModel(ViTConfig(**HF_VIT), add_pooling_layer=False) if cls else
                   IJepaModel(IJepaConfig(**HF_VIT))).eval())
    timm = ViT(ARCH, img_size=64, with_cls_token=cls)
    timm.load_pretrained(ref.state_dict())
    npz = _jax_layout(timm.state_dict(), heads=2, big_vision=layout.startswith('big_vision'),
                      prefix='params/' if layout.startswith('big_vision') else '',
                      scan='scan' in layout, i21k=layout == 'augreg-i21k')
    np.savez(tmp_path / 'vit.npz', **npz)
    ours = ViT(ARCH, img_size=64, with_cls_token=cls, out_indices=(2,), drop_path_rate=0.0,
               init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'vit.npz')))
    ours.init_weights()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x).last_hidden_state[:, int(cls):]
        assert (_map(expected) - ours.eval()(x)[0]).abs().max() <= TOL


def test_siglip_loads_from_transformers_big_vision_and_timm(tmp_path, capsys):
    """SigLIP's image encoder (no [CLS] token, GELU's tanh approximation, a MAP head): the
    transformers layout was refused as no known format, big_vision's ``.npz`` (``params/img/``
    beside the text tower) failed with ``KeyError: 'cls'`` (a traceback from init_cfg and from
    tools/model_converters/vit2mmvtx.py), timm's as unexpected ``attn_pool`` keys. A ViT with
    ``with_cls_token=False, mlp_type='gelu_tanh'`` loads each (the head dropped) and gives
    transformers' SiglipVisionModel features, at the pretraining size and another; built
    otherwise, the load says in one line what to build."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from mmvtx.utils.convert_cli import convert_main
    ref = jitter_(SiglipVisionModel(SiglipVisionConfig(**{
        k: v for k, v in HF_VIT.items() if 'dropout' not in k})).eval())
    build = dict(arch=ARCH, img_size=64, with_cls_token=False, mlp_type='gelu_tanh',
                 out_indices=(2,), drop_path_rate=0.0)
    ours = ViT(**build).eval()
    assert ours.load_pretrained(ref.state_dict()).source == 'transformers-siglip'
    timm = {k: v for k, v in ours.state_dict().items() if not k.startswith('pyramid.')}
    timm.update({'attn_pool.latent': _t(1, 1, 32), 'attn_pool.q.weight': _t(32, 32)})
    npz = _jax_layout(timm, heads=2, big_vision=True, prefix='params/img/')
    npz.update({'params/img/MAPHead_0/probe': np.zeros((1, 1, 32), np.float32),
                'params/img/MAPHead_0/MultiHeadDotProductAttention_0/query/kernel':
                    np.zeros((32, 2, 16), np.float32),
                'params/txt/Encoder_0/encoder_norm/scale': np.ones(32, np.float32),
                'params/t': np.ones(1, np.float32)})
    np.savez(tmp_path / 'siglip.npz', **npz)
    for ckpt in (timm, str(tmp_path / 'siglip.npz')):
        model = ViT(**build)
        model.load_pretrained(ckpt)
        for size in ((64, 64), (96, 80)):
            x = torch.randn(1, 3, *size)
            with torch.no_grad():
                want = ref(x, interpolate_pos_encoding=True).last_hidden_state
                want = want.transpose(1, 2).reshape(1, 32, size[0] // 16, size[1] // 16)
                assert (model.eval()(x)[0] - want).abs().max() <= TOL
    # mlp_type not set: the activation follows the SigLIP file (GELU's tanh approximation)
    auto = ViT(**{k: v for k, v in build.items() if k != 'mlp_type'}).eval()
    auto.load_pretrained(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = ref(x).last_hidden_state.transpose(1, 2).reshape(1, 32, 4, 4)
        assert (auto(x)[0] - want).abs().max() <= TOL
    for ckpt in (ref.state_dict(), str(tmp_path / 'siglip.npz')):
        with pytest.raises(CheckpointMismatchError, match=r"^ViT: a SigLIP image encoder .*"
                           r"build the ViT with with_cls_token=False, mlp_type='gelu_tanh'"):
            ViT(ARCH, img_size=64).load_pretrained(ckpt)
    # SigLIP 2's NaFlex encoder (a linear patch embedding, positions resampled per image
    # bilinearly with antialiasing) is named, not refused as a shape mismatch
    naflex = _hf('Siglip2VisionModel', 'Siglip2VisionConfig', hidden_size=32,
                 num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                 patch_size=16, num_patches=16)
    with pytest.raises(CheckpointMismatchError) as e:
        ViT(**build).load_pretrained(naflex)
    assert str(e.value).startswith('ViT: a SigLIP 2 NaFlex image encoder') and \
        '\n' not in str(e.value)
    options = '{"embed_dims": 32, "num_layers": 2, "num_heads": 2, "img_size": 64'
    with pytest.raises(SystemExit) as e:
        convert_main('ViT', 'base', [str(tmp_path / 'siglip.npz'), str(tmp_path / 'out.pth'),
                                     '--options', options + '}'])
    err = capsys.readouterr().err
    assert e.value.code == 1 and 'a SigLIP image encoder' in err and 'Traceback' not in err
    assert len(err.strip().splitlines()) == 1
    convert_main('ViT', 'base', [str(tmp_path / 'siglip.npz'), str(tmp_path / 'out.pth'),
                                 '--options', options + ', "with_cls_token": false, '
                                 '"mlp_type": "gelu_tanh"}'])
    # as converted, but for mlp_type: the file records the activation
    model = ViT(**dict({k: v for k, v in build.items() if k != 'mlp_type'},
                       out_indices=(0, 1, 2, 3)),
                init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'out.pth')))
    model.init_weights()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = ref(x).last_hidden_state.transpose(1, 2).reshape(1, 32, 4, 4)
        assert (model.eval()(x)[2] - want).abs().max() <= TOL


@pytest.mark.parametrize('kind', ['BeitModel', 'Data2VecVisionModel'])
def test_beit_without_relative_position_bias_matches_transformers(kind):
    """A BEiT / data2vec vision fine-tuned with absolute positions only (no relative position
    bias) is a ViT with LayerScale and query/value biases: transformers' layout (5.x BeitModel
    ``lambda_1``, ``k_proj`` without a bias; 4.x data2vec ``attention.attention.key``) was
    refused as "['.attention.k_proj.'] missing beside the other attention projections". It
    loads into ViT(layer_scale_init=..., qkv_bias='qv') and into a plain qkv-biased ViT alike
    (a zero key bias), and gives transformers' features."""
    import transformers
    config = getattr(transformers, kind.replace('Model', 'Config'))(
        **HF_VIT, use_absolute_position_embeddings=True, use_relative_position_bias=False,
        use_shared_relative_position_bias=False, layer_scale_init_value=0.1,
        use_mean_pooling=False)
    ref = jitter_(getattr(transformers, kind)(config).eval())
    x = torch.randn(2, 3, 80, 64)
    with torch.no_grad():
        expected = ref(x, interpolate_pos_encoding=True).last_hidden_state[:, 1:]
    expected = expected.transpose(1, 2).reshape(2, 32, 5, 4)
    for qkv_bias in ('qv', True):
        ours = ViT(ARCH, img_size=64, layer_scale_init=0.1, qkv_bias=qkv_bias, out_indices=(2,),
                   drop_path_rate=0.0)
        assert ours.load_pretrained(ref.state_dict()).source == 'transformers'
        with torch.no_grad():
            assert (ours.eval()(x)[0] - expected).abs().max() <= TOL


def test_a_timm_beit_without_relative_bias_is_named_beit_and_loads():
    """timm's BEiT names (``blocks.N.attn.q_bias``/``v_bias``, LayerScale ``gamma_1``/``gamma_2``)
    loaded, but the load line called the file "a deit3 checkpoint" (DeiT-III's LayerScale
    names, checked first): a user reading it thought the wrong file was given. Named BEiT now,
    DeiT-III's own names still deit3."""
    src = jitter_(ViT(ARCH, img_size=64, layer_scale_init=0.1, qkv_bias='qv', out_indices=(2,),
                      drop_path_rate=0.0).eval())
    timm_beit = {k.replace('.ls1.gamma', '.gamma_1').replace('.ls2.gamma', '.gamma_2'): v
                 for k, v in src.state_dict().items() if not k.startswith('pyramid.')}
    assert any('.attn.q_bias' in k for k in timm_beit) and any('.gamma_1' in k for k in timm_beit)
    ours = ViT(ARCH, img_size=64, layer_scale_init=0.1, qkv_bias='qv', out_indices=(2,),
               drop_path_rate=0.0).eval()
    assert ours.load_pretrained(timm_beit).source == 'beit'
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        assert (ours(x)[0] - src(x)[0]).abs().max() <= TOL
    deit3 = {k.replace('.attn.q_bias', '.attn.qkv.bias'): (torch.cat([v, torch.zeros_like(v),
             timm_beit[k.replace('q_bias', 'v_bias')]]) if k.endswith('q_bias') else v)
             for k, v in timm_beit.items() if not k.endswith('v_bias')}
    plain = ViT(ARCH, img_size=64, layer_scale_init=0.1, out_indices=(2,), drop_path_rate=0.0)
    assert plain.load_pretrained(deit3).source == 'deit3'


def test_maskformer_swin_loads_its_backbone_norms_and_shift_rule(tmp_path):
    """transformers' MaskFormer (facebook/maskformer-swin-*; its own copy of Swin, also built
    from a 'swin' config) keeps MaskFormerSwinModel under ``encoder.model.`` and numbered output
    norms (``hidden_states_norms.0``): the loader took the inner model, left the four output
    norms at their init, put the unused final norm on level 3, and followed SwinModel's shift
    rule where MaskFormer's Swin always shifts: features off by 0.12-0.39 after "loaded 120
    tensors". The backbone's norms and rule are taken; MaskFormerSwinModel saved on its own
    (named as SwinModel) is told by its config.json."""
    import transformers
    config = transformers.MaskFormerSwinConfig(
        embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2], window_size=4,
        drop_path_rate=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        out_features=['stage1', 'stage2', 'stage3', 'stage4'])
    encoder = jitter_(transformers.MaskFormerSwinBackbone(config).eval())
    # as MaskFormerForInstanceSegmentation keeps it, beside its pixel and transformer decoders
    whole = {f'model.pixel_level_module.encoder.{k}': v for k, v in encoder.state_dict().items()}
    whole.update({'model.pixel_level_module.decoder.mask_projection.weight': _t(16, 16, 3, 3),
                  'model.transformer_module.decoder.layers.0.self_attn.k_proj.weight': _t(8, 8),
                  'class_predictor.weight': _t(3, 8)})
    arch = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2))
    x = torch.randn(1, 3, 61, 83)
    ours = SwinTransformer(arch, window_size=4, drop_path_rate=0.0).eval()
    ours.load_pretrained(whole)
    with torch.no_grad():
        want, got = encoder(x).feature_maps, ours(x)
    assert max((w - g).abs().max() for w, g in zip(want, got)) <= TOL
    encoder.model.save_pretrained(str(tmp_path / 'maskformer-swin'))
    ours = SwinTransformer(arch, window_size=4, drop_path_rate=0.0, out_indices=(3,)).eval()
    ours.load_pretrained(str(tmp_path / 'maskformer-swin'))
    with torch.no_grad():
        want = encoder.model(x).last_hidden_state
        got = ours(x)[0].flatten(2).transpose(1, 2)
    assert (want - got).abs().max() <= TOL


def test_a_structure_mismatch_names_the_argument_to_build_with():
    """A BEiT / data2vec file (LayerScale, query and value biases) given to a default ViT was
    refused listing ``blocks.N.ls1.gamma`` as unexpected keys, and a converted SigLIP file (no
    [CLS]) given to one with it as ``missing keys (1): cls_token``, naming no argument: the
    error now says what to build the ViT with; built so, each loads."""
    import transformers
    config = transformers.BeitConfig(
        **HF_VIT, use_absolute_position_embeddings=True, use_relative_position_bias=False,
        use_shared_relative_position_bias=False, layer_scale_init_value=0.1,
        use_mean_pooling=False)
    beit = transformers.BeitModel(config).state_dict()
    # a SigLIP file as tools/model_converters/vit2mmvtx.py writes it
    siglip = ViT(ARCH, img_size=64, with_cls_token=False, mlp_type='gelu_tanh').state_dict()
    no_bias = ViT(ARCH, img_size=64, qkv_bias=False).state_dict()
    for ckpt, build, want in (
            (beit, {}, 'layer_scale_init=0.1'),
            (siglip, {}, 'with_cls_token=False'),
            (beit, {'layer_scale_init': 0.1, 'qkv_bias': False}, 'qkv_bias=True'),
            (no_bias, {}, 'qkv_bias=False')):
        with pytest.raises(CheckpointMismatchError) as e:
            ViT(ARCH, img_size=64, **build).load_pretrained(ckpt)
        hint = str(e.value).splitlines()[-1]
        assert hint.startswith('  hint: build the ViT with ') and want in hint, str(e.value)
        arg, value = want.split('=')
        ViT(ARCH, img_size=64, **dict(build, **{arg: eval(value)})).load_pretrained(ckpt)
