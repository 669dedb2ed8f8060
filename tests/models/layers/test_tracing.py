"""mmengine's FLOP counter (what mmdet's and mmseg's ``tools/analysis_tools/get_flops.py`` run,
with autograd on) and ``torch.jit.trace`` see every operator of the backbones.

They had missed a third of the FLOPs: the second Linear of each MLP and Swin's/ViTDet's biased
attention ran in custom autograd Functions (one opaque ``prim::PythonOp`` to the tracer), and
mmengine does not count ``aten::scaled_dot_product_attention``: ``get_flops.py`` gave our Swin-T
2.98 GFLOPs at 224 where mmdet's Swin-T gives 4.51.
"""
import pytest
import torch
from mmengine.analysis import FlopAnalyzer

from mmvtx.models.backbones import CvT, SwinTransformer, ViT
from mmvtx.utils.flops import count_flops

GEMM_OPS = ('conv', 'linear', 'matmul', 'addmm', 'bmm', 'einsum')

BACKBONES = {
    'swin': lambda: SwinTransformer(arch='tiny', embed_dims=48, depths=(2, 2, 2, 2)),
    'vit': lambda: ViT(arch='small', num_layers=2, out_indices=(0, 1)),
    'vitdet': lambda: ViT(arch='vitdet-b', embed_dims=96, num_heads=3, num_layers=2,
                          out_indices=(0, 1), global_attn_indexes=(1,)),
    'dinov3': lambda: ViT(arch='dinov3-s', num_layers=2, out_indices=(0, 1)),
    'cvt': lambda: CvT(embed_dims=(16, 48, 96), depths=(1, 1, 2), num_heads=(1, 3, 6)),
}


def test_get_flops_counts_swin_as_mmdets_swin():
    """At 224 (every stage a whole number of windows) both Swins compute the same products:
    mmengine's count (autograd on, as get_flops.py) is the same number."""
    from mmdet.models.backbones import SwinTransformer as MMDetSwin
    x = torch.randn(1, 3, 224, 224)
    ours = SwinTransformer(arch='tiny').eval()
    theirs = MMDetSwin()  # Swin-T
    theirs.eval()  # (mmdet's Swin's train() returns None)
    assert torch.is_grad_enabled()
    flops = FlopAnalyzer(ours, (x,)).total()
    assert flops == FlopAnalyzer(theirs, (x,)).total()
    assert flops == pytest.approx(4.5e9, rel=0.01)  # the Swin paper's Table 1


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_mmengine_flop_counter_sees_every_product(name):
    """mmengine's GEMM FLOPs (autograd on) = PyTorch's dispatch-level count of the same
    forward (fused attention included), and the traced module computes the eager outputs."""
    torch.manual_seed(0)
    model = BACKBONES[name]().eval()
    x = torch.randn(1, 3, 80, 112)  # Swin: padded windows, ViT: a non-square grid
    ops = FlopAnalyzer(model, (x,)).by_operator()
    counted = sum(n for op, n in ops.items() if op in GEMM_OPS)
    with torch.no_grad():
        reference = count_flops(lambda: model(x)).total / 2  # multiply-adds
        eager = model(x)
        traced = torch.jit.trace(model, (x,), check_trace=False)(x)
    assert counted == pytest.approx(reference, rel=1e-3), ops
    for a, b in zip(eager, traced):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_tracing_with_grad_keeps_gradients():
    """The plain operators taken while tracing are differentiable like the eager ones."""
    torch.manual_seed(0)
    model = BACKBONES['swin']().eval()  # no drop path: the same function twice
    x = torch.randn(1, 3, 64, 64)
    traced = torch.jit.trace(model, (x,), check_trace=False)
    sum(o.sum() for o in traced(x)).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    sum(o.sum() for o in model(x)).backward()
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-3, atol=1e-4)
