"""Deployment: ``torch.export`` with dynamic input sizes gives one program that runs at other
sizes and computes the eager outputs; ``torch.jit.trace`` runs at the traced size.

An exported program is checked at sizes on the other side of every size-dependent shortcut
than the example: multiples of the patch size (no crop, no padding) vs not, and a patch grid
equal to the pretraining grid (the position embedding or ViTDet's relative position tables
kept as they are) vs another; for window attention (Swin, ViTDet), maps with and without
padded window slots, with one window and with several, and (Swin's authors' rule) stages that
fit in one window (not shifted) and larger ones. Tolerance: 1e-5 absolute (outputs of order 1;
measured <= 5e-7 for ViT and CvT, <= 4e-6 for Swin).
"""
import pytest
import torch
from torch.export import Dim, export

from mmvtx.models.backbones import CvT, SwinTransformer, ViT
from tests.conftest import jitter_

TOL = 1e-5

MODELS = {
    # pretraining grid 4 x 4 at 64 px: the example (64 x 64) is at it, the checks are not
    'vit': lambda: ViT(embed_dims=32, num_layers=2, num_heads=2, img_size=64),
    'vitdet': lambda: ViT('vitdet-b', embed_dims=32, num_layers=2, num_heads=2, window_size=3,
                          global_attn_indexes=(1,), img_size=64, rel_pos_img_size=64),
    'dinov2': lambda: ViT('dinov2-b', embed_dims=32, num_layers=2, num_heads=2, img_size=56,
                          layer_scale_init=0.5),
    'dinov2-reg': lambda: ViT('dinov2-reg-b', embed_dims=32, num_layers=2, num_heads=2,
                              img_size=56, layer_scale_init=0.5),
    'dinov3': lambda: ViT('dinov3-b', embed_dims=32, num_layers=2, num_heads=2,
                          layer_scale_init=0.5),
    'cvt': lambda: CvT(arch=dict(embed_dims=(16, 32, 32), depths=(1, 1, 1),
                                 num_heads=(1, 2, 2))),
    # window 4, the authors' shift rule: at 64 x 64 the stage maps are 16, 8, 4, 2 (no padded
    # slot in stages 1-3, one window in stages 3-4, stage 4 not shifted)
    'swin': lambda: SwinTransformer(arch=dict(embed_dims=16, depths=(2, 2, 2, 2),
                                              num_heads=(1, 2, 2, 2)), window_size=4),
    # window 7, every block shifted (mmdet's rule): stage 4 is one window up to 224 px
    'swin-mmdet': lambda: SwinTransformer(arch=dict(embed_dims=16, depths=(2, 2, 2, 2),
                                                    num_heads=(1, 2, 2, 2)), always_shift=True),
}


def _model(name):
    torch.manual_seed(0)
    return jitter_(MODELS[name]()).eval()


def _check(program, model, sizes):
    for hw in sizes:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            ref = model(x)
        out = program(x)
        assert [o.shape for o in out] == [r.shape for r in ref], (hw, out)
        for o, r in zip(out, ref):
            assert (o - r).abs().max() <= TOL, hw


@pytest.mark.parametrize('name', list(MODELS))
def test_exported_program_runs_at_other_sizes(name):
    """``Dim.AUTO`` H and W: the program specialised on nothing of the example's size. Had
    failed at every other size for ViTDet (the relative position tables' "already this
    length" shortcut, a guard ``ceil(H / 16) == 4``) and DINOv2 (the position embedding's
    offset scale taken as a constant), and at sizes not multiples of 16 for every ViT whose
    example was one (the crop of the upsampled levels, a guard that it cropped nothing).
    Swin had failed at every size with padded window slots (their count, 0 at the example,
    specialised: a guard ``slots - H*W < 2``), with several windows in stage 3 (a window count
    of 1 specialised) or, with the authors' shift rule, with a shifted stage 4 (a guard
    ``min(h, w) <= 4``); ViTDet at sizes without padded slots (48 x 48)."""
    model = _model(name)
    x = torch.randn(2, 3, 64, 64)
    ep = export(model, (x,), dynamic_shapes={'x': {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}})
    _check(ep.module(), model, [(64, 64), (45, 77), (100, 37), (56, 56), (48, 48), (224, 224)])


@pytest.mark.parametrize('name', ['vit', 'dinov3', 'dinov2-reg', 'swin'])
def test_export_with_ranged_dims(name):
    """``Dim('H', min=33, max=2048)`` (maps of at least 2 x 2 cells at stride 32): accepted,
    no size in the range refused as a guard (had: the pretraining grid's size excluded, and the
    crop's and the ceil-mode max-pool's bounds reported as unprovable)."""
    model = _model(name)
    dims = {0: Dim('B', min=2, max=16), 2: Dim('H', min=33, max=2048),
            3: Dim('W', min=33, max=2048)}
    ep = export(model, (torch.randn(2, 3, 64, 96),), dynamic_shapes={'x': dims})
    _check(ep.module(), model, [(45, 77), (64, 64), (33, 200)])


def test_dinov2_traces():
    """``torch.jit.trace`` of a DINOv2 (position offset) at its traced size: had failed in
    ``upsample_bicubic2d`` (the traced scale factors are tensors)."""
    model = _model('dinov2')
    x = torch.randn(1, 3, 45, 77)
    with torch.no_grad():
        ref = model(x)
        out = torch.jit.trace(model, (x,), check_trace=False)(x)
    for o, r in zip(out, ref):
        assert (o - r).abs().max() <= TOL


@pytest.mark.parametrize('src,dst', [(4, 5), (37, 80), (37, 20), (16, 16), (4, 1)])
def test_bicubic_matrix_is_pytorchs_resampling(src, dst):
    """The size-traceable bicubic weights equal F.interpolate's (read off by
    :func:`interpolation_matrix`) within float32 rounding of the sampling positions."""
    from mmvtx.models.layers.pos_embed import bicubic_matrix, interpolation_matrix
    scale = (dst + 0.1) / src
    a = bicubic_matrix(src, dst, scale)
    assert (a - interpolation_matrix(src, dst, 'bicubic', scale)).abs().max() <= 5e-6
