"""What every mmvtx backbone promises the mmdet/mmseg necks and heads:
a tuple of contiguous NCHW maps at strides 4/8/16/32, in train and eval mode alike.

Contiguity is not cosmetic: mmcv's CPU RoIAlign reads its input as contiguous NCHW memory
whatever its strides (open-mmlab/mmcv#2203), and a convolution keeps a channels-last layout, so a channels-last map
from the backbone reaches the RoI heads through the FPN as scrambled features (CvT trained
from scratch on shapes stayed at 0.01 bbox mAP until its maps were made contiguous)."""
import re

import pytest
import torch
from mmcv.ops import roi_align

from mmvtx.models.backbones import CvT, SwinTransformer, ViT

BACKBONES = {
    'swin': lambda: SwinTransformer(embed_dims=24, depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 4)),
    'vit': lambda: ViT(embed_dims=48, num_layers=2, num_heads=2),
    'cvt': lambda: CvT(embed_dims=(16, 48, 96), depths=(1, 1, 2), num_heads=(1, 3, 6)),
    'cvt-out-norms': lambda: CvT(embed_dims=(16, 48, 96), depths=(1, 1, 2),
                                 num_heads=(1, 3, 6), out_norms=True),
}


@pytest.mark.parametrize('name', sorted(BACKBONES))
@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('H,W', [(96, 160), (1, 1), (37, 83), (129, 50)])
def test_maps_are_contiguous_nchw_at_strides_4_to_32(name, train, H, W):
    model = BACKBONES[name]().train(train)
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        outs = model(x)
    assert len(outs) == 4
    for level, out in enumerate(outs):
        stride = 4 * 2 ** level  # exactly ceil(H / stride): the backbones are interchangeable
        assert out.shape[:1] == (2,) and out.shape[2:] == (-(-H // stride), -(-W // stride))
        assert out.is_contiguous(), (name, level, out.stride())


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_roi_align_reads_the_maps_as_they_are(name):
    """The user-visible consequence: RoIAlign on the returned maps pools what the maps hold."""
    model = BACKBONES[name]().eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 96, 160))
    rois = torch.tensor([[0, 10., 8., 70., 60.], [1, 40., 20., 150., 90.]])
    for level, out in enumerate(outs):
        scale = 1.0 / (4 * 2 ** level)
        got = roi_align(out, rois, (7, 7), scale, 2, 'avg', True)
        want = roi_align(out.clone(memory_format=torch.contiguous_format), rois, (7, 7), scale,
                         2, 'avg', True)
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize('name', ['swin', 'vit', 'vit_windowed', 'cvt'])
def test_attention_runs_through_its_modules(name):
    """Forward hooks (FLOP counters, LoRA or quantisation wrappers) see every attention module
    and its qkv and output projections: each is called through ``nn.Module.__call__`` once per
    block and forward."""
    from mmvtx.models.backbones.cvt import ConvAttention
    from mmvtx.models.backbones.swin import WindowMSA
    from mmvtx.models.backbones.vit import Attention
    model = {'swin': lambda: SwinTransformer('tiny', depths=(2, 2, 2, 2)),
             'vit': lambda: ViT(embed_dims=64, num_layers=2, num_heads=2),
             'vit_windowed': lambda: ViT(embed_dims=64, num_layers=2, num_heads=2, window_size=4,
                                         global_attn_indexes=(1,), with_cls_token=False),
             'cvt': lambda: CvT('13')}[name]()
    attn_types = (WindowMSA, Attention, ConvAttention)
    calls = {}
    for mod_name, m in model.named_modules():
        if isinstance(m, attn_types) or mod_name.endswith(('attn.qkv', 'attn.proj',
                                                            'attn.proj_q')):
            m.register_forward_hook(lambda m, i, o, n=mod_name: calls.__setitem__(
                n, calls.get(n, 0) + 1))
    model(torch.randn(1, 3, 64, 96))
    expected = [n for n, m in model.named_modules() if isinstance(m, attn_types)]
    assert expected and all(calls.get(n) == 1 for n in expected)
    projections = [n for n in calls if not n.endswith('attn')]
    assert len(projections) == 2 * len(expected)  # qkv (or q/k/v) and the output projection
    assert set(calls.values()) == {1}


@pytest.mark.parametrize('cls, kwargs', [(SwinTransformer, dict(depths=(1, 1, 1, 1))),
                                         (ViT, dict(embed_dims=64, num_layers=2, num_heads=2)),
                                         (CvT, dict())])
def test_non_finite_weights_are_refused_by_name(tmp_path, cls, kwargs):
    """A checkpoint saved after a run diverged (NaN/inf weights) is refused through init_cfg,
    naming its tensors; ``allow_nonfinite=True`` loads it anyway."""
    from mmvtx.utils import CheckpointMismatchError
    sd = cls(**kwargs).state_dict()
    names = [k for k, v in sd.items() if v.is_floating_point()][:2]
    sd[names[0]].view(-1)[0] = float('nan')
    sd[names[1]].view(-1)[-1] = float('-inf')
    path = str(tmp_path / 'diverged.pth')
    torch.save(sd, path)
    model = cls(**kwargs, init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointMismatchError, match='non-finite') as err:
        model.init_weights()
    assert all(f'{n} (1 of ' in str(err.value) for n in names) and path in str(err.value)
    model = cls(**kwargs, init_cfg=dict(type='Pretrained', checkpoint=path, allow_nonfinite=True))
    model.init_weights()
    assert torch.isnan(model.state_dict()[names[0]]).any()


LOADERS = [(SwinTransformer, dict(depths=(1, 1, 1, 1))),
           (ViT, dict(embed_dims=64, num_layers=2, num_heads=2)),
           (CvT, dict(embed_dims=(16, 48, 96), depths=(1, 1, 2), num_heads=(1, 3, 6)))]


@pytest.mark.parametrize('cls, kwargs', LOADERS)
def test_a_list_of_init_cfg_applies_every_entry(tmp_path, cls, kwargs):
    """As mmengine: the other initialisers, then the checkpoint over them; an entry for layers
    the checkpoint does not hold (here every LayerNorm's bias, zeroed in the file) keeps it."""
    source = cls(**kwargs)
    sd = source.state_dict()
    path = str(tmp_path / 'source.pth')
    torch.save(sd, path)
    model = cls(**kwargs, init_cfg=[
        dict(type='Pretrained', checkpoint=path),
        dict(type='Constant', layer='Linear', val=0.5, bias=0.25)])
    model.init_weights()
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in sd.items())  # the checkpoint won
    # without the checkpoint, the Constant entry alone is applied
    model = cls(**kwargs, init_cfg=[dict(type='Constant', layer='Linear', val=0.5, bias=0.25)])
    model.init_weights()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all((m.weight == 0.5).all() for m in linears)
    with pytest.raises(ValueError, match='names no checkpoint'):
        cls(**kwargs, init_cfg=dict(type='Pretrained')).init_weights()


@pytest.mark.parametrize('cls, kwargs', LOADERS)
@pytest.mark.parametrize('init_cfg', ['swin_tiny_patch4_window7_224.pth', 5,
                                      dict(checkpoint='w.pth'),
                                      [dict(type='Constant', layer='Linear', val=0.5), 'w.pth']])
def test_an_init_cfg_that_is_no_initialiser_is_refused_by_its_value(cls, kwargs, init_cfg):
    """A checkpoint path given as init_cfg itself (or an entry without a type) is refused when
    the backbone is built, naming it and, for a path, the spelling that loads it; mmengine
    failed at init_weights with "'str' object has no attribute 'pop'"."""
    with pytest.raises(ValueError, match=r'init_cfg=.*must be a dict with a .type.') as err:
        cls(**kwargs, init_cfg=init_cfg)
    if isinstance(init_cfg, str):
        assert f"dict(type='Pretrained', checkpoint={init_cfg!r})" in str(err.value)


@pytest.mark.parametrize('cls, kwargs', LOADERS)
def test_strict_false_says_what_it_skipped(tmp_path, cls, kwargs, monkeypatch):
    from mmvtx.utils import checkpoint
    sd = cls(**kwargs).state_dict()
    dropped, extra = next(k for k in sd if '.' in k), 'not_a_weight'
    reshaped = [k for k, v in sd.items() if v.dim() == 2][0]
    sd = {k: v for k, v in sd.items() if k != dropped}
    sd[extra] = torch.zeros(3)
    sd[reshaped] = torch.zeros(sd[reshaped].shape[0] + 1, sd[reshaped].shape[1])
    torch.save(sd, tmp_path / 'partial.pth')
    logged = []
    monkeypatch.setattr(checkpoint, 'print_log', lambda msg, **kw: logged.append(msg))
    model = cls(**kwargs, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'partial.pth'),
                                        strict=False))
    model.init_weights()
    text = '\n'.join(logged)
    # every tensor of the model but the missing and the mis-shaped one
    assert f'loaded {len(model.state_dict()) - 2} tensors' in text, text
    assert all(k in text for k in (dropped, extra, reshaped)), text


@pytest.mark.parametrize('cls, source, target, key', [
    (SwinTransformer, dict(window_size=12), dict(window_size=7), 'relative_position_bias_table'),
    (ViT, dict(img_size=224), dict(img_size=320), 'pos_embed')])
def test_init_cfg_names_the_tables_it_resampled(tmp_path, monkeypatch, cls, source, target,
                                                key):
    """Fine-tuning a release of another window or pretraining size through ``init_cfg`` (a
    window-12 Swin in a window-7 recipe) resamples its tables: the load line says so, with a
    table's shapes (it said only 'loaded N tensors', as if the file were the model's)."""
    from mmvtx.utils import checkpoint
    kwargs = dict(LOADERS[0][1] if cls is SwinTransformer else LOADERS[1][1])
    torch.save(cls(**kwargs, **source).state_dict(), tmp_path / 'src.pth')
    logged = []
    monkeypatch.setattr(checkpoint, 'print_log', lambda msg, **kw: logged.append(msg))
    model = cls(**kwargs, **target,
                init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'src.pth')))
    model.init_weights()
    text = '\n'.join(logged)
    shapes = {k: (tuple(v.shape), tuple(model.state_dict()[k].shape))
              for k, v in cls(**kwargs, **source).state_dict().items() if k.endswith(key)}
    k, (was, now) = sorted(shapes.items())[0]
    assert was != now
    assert (f'{len(shapes)} tensor(s) of another window or grid size resampled to the '
            f"model's (e.g. {k}: {was} -> {now})") in text, text


@pytest.mark.parametrize('cls, kwargs', LOADERS)
def test_with_cp_trains_the_same(cls, kwargs):
    """Activation checkpointing changes memory, not training: same loss and gradients, and the
    recomputation in backward does not update BatchNorm statistics again (CvT's projections)."""
    plain = cls(**kwargs, drop_path_rate=0.0).train()
    ckpt = cls(**kwargs, drop_path_rate=0.0, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 96)
    for model in (plain, ckpt):
        sum(o.square().mean() for o in model(x)).backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-5), name
    for (name, b), c in zip(plain.named_buffers(), ckpt.buffers()):
        assert torch.equal(b, c), name


def _saved_activation_bytes(model, x):
    """Bytes autograd keeps for backward over one training forward."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return total[0]


@pytest.mark.parametrize('cls, kwargs', LOADERS)
def test_with_cp_checkpoints_every_trained_block_after_frozen_stages(cls, kwargs, monkeypatch):
    """Under ``frozen_stages`` the first trained block gets an input without gradient (the
    frozen part's output): it is checkpointed as every other trained block, so that freezing
    more never keeps more activations for backward."""
    from mmvtx.models.backbones import base
    checkpointed = []
    checkpoint = base.cp.checkpoint
    monkeypatch.setattr(base.cp, 'checkpoint', lambda fn, *a, **kw: (
        checkpointed.append(fn), checkpoint(fn, *a, **kw))[1])
    x = torch.randn(2, 3, 64, 96)
    saved = {}
    for frozen in (-1, 0, 1):
        model = cls(**kwargs, frozen_stages=frozen, with_cp=True).train()
        checkpointed.clear()
        saved[frozen] = _saved_activation_bytes(model, x)
        trained = [m for name, m in model.named_modules() if name.split('.')[-2:-1] == ['blocks']
                   and any(p.requires_grad for p in m.parameters())]
        assert trained and [id(m) for m in checkpointed] == [id(m) for m in trained], frozen
    assert saved[-1] >= saved[0] >= saved[1], saved


@pytest.mark.parametrize('name', sorted(BACKBONES))
@pytest.mark.parametrize('shape', [(1, 3, 0, 5), (2, 3, 7, 0)])
def test_an_image_without_pixels_is_refused_by_its_shape(name, shape):
    """Any H, W >= 1 is taken; an empty side (a degenerate crop or resize upstream) is refused
    naming the input's shape, not by a convolution deep inside ("Kernel size can't be
    greater than actual input size")."""
    with pytest.raises(ValueError, match=r'H, W >= 1, got ' + re.escape(str(shape))):
        BACKBONES[name]()(torch.randn(*shape))


@pytest.mark.parametrize('name', sorted(BACKBONES) + ['vitdet'])
def test_a_batch_of_no_images(name):
    """An empty batch gives empty maps of the shapes one image gets (and a backward runs)."""
    model = ViT('vitdet-b', embed_dims=48, num_layers=2, num_heads=2, global_attn_indexes=(1,)) \
        if name == 'vitdet' else BACKBONES[name]()
    model.train()
    empty, one = model(torch.randn(0, 3, 70, 90)), model(torch.randn(1, 3, 70, 90))
    assert [o.shape[1:] for o in empty] == [o.shape[1:] for o in one]
    assert all(o.shape[0] == 0 for o in empty)
    sum(o.sum() for o in empty).backward()


@pytest.mark.parametrize('name', ['swin', 'cvt-out-norms'])
def test_a_frozen_levels_map_is_not_changed_by_training(name):
    """``frozen_stages=k`` keeps the maps of the first k levels as they were (the output norms
    of those levels included, as mmdet's Swin freezes its norm0): a training step changes only
    the later levels."""
    model = BACKBONES[name]()
    model.frozen_stages = 1
    model.train()  # applies frozen_stages
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
    params = [p for p in model.parameters() if p.requires_grad]
    sum(o.square().mean() for o in model(x)).backward()
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= 0.5 * p.grad
        after = model(x)
    assert torch.equal(before[0], after[0])
    assert not torch.equal(before[1], after[1])


@pytest.mark.parametrize('cls', [SwinTransformer, ViT, CvT])
def test_an_arch_of_another_type_is_refused_naming_the_kinds_of_arch(cls):
    """``arch=True`` (a bool is an int to Python) is no preset name; an unknown number names
    every preset the backbone has (ViT's families too)."""
    with pytest.raises(ValueError, match=r'arch=True must be a preset name or a dict'):
        cls(arch=True)
    with pytest.raises(ValueError, match='unknown arch') as info:
        cls(arch=99)
    if cls is ViT:
        assert 'dinov2-b' in str(info.value)


@pytest.mark.parametrize('name', ['swin', 'vitdet'])  # the backbones with window geometry
def test_training_after_inference_mode_at_the_same_size(name):
    """An evaluation under ``torch.inference_mode()`` (a custom loop, Lightning's default)
    then training at the same size: Swin's and ViTDet's window geometry, cached per size, was
    built from inference tensors there and every later training step at that size failed
    ("Inference tensors cannot be saved for backward"). The step gives the gradients of a
    model that never ran under inference mode."""
    def build():
        torch.manual_seed(0)
        return ViT('vitdet-b', embed_dims=48, num_layers=2, num_heads=2, window_size=3,
                   global_attn_indexes=(1,)) if name == 'vitdet' \
            else BACKBONES[name]()
    x = torch.randn(2, 3, 45, 37)
    grads = []
    for infer_first in (True, False):
        model = build().eval()
        if infer_first:
            with torch.inference_mode():
                model(x)
        model.train()
        torch.manual_seed(1)  # the same stochastic depth in both steps
        sum(o.square().mean() for o in model(x)).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        assert torch.equal(grads[0][n], grads[1][n]), n
