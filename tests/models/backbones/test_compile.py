"""torch.compile of the backbones with the options the graph-break tests leave out."""
import copy

import pytest
import torch

from mmvtx.models.backbones import CvT, SwinTransformer, ViT


@pytest.mark.parametrize('name', ['swin', 'cvt'])
def test_activation_checkpointing_compiles(name, monkeypatch):
    """``with_cp=True`` under ``torch.compile`` (``tools/train.py --compile`` with a config
    that checkpoints its blocks): the compiled training step runs and gives the eager outputs,
    gradients and BatchNorm running statistics (CvT's projections: updated once, as eager).
    The recompute contexts that keep eager checkpointing from updating the statistics twice
    are not TorchDispatchModes, which torch.compile refuses (``BackendCompilerFailed``)."""
    monkeypatch.setenv('MMVTX_ONEDNN_LINEAR', '1')  # AMD's default path, on any CPU
    torch.manual_seed(0)
    model = (SwinTransformer(arch=dict(embed_dims=16, depths=(2,), num_heads=(2,)),
                             window_size=3, out_indices=(0,), drop_path_rate=0.0,
                             with_cp=True) if name == 'swin' else
             CvT(arch=dict(embed_dims=(8, 16, 16), depths=(1, 1, 1), num_heads=(1, 2, 2)),
                 out_indices=(0, 1, 2), drop_path_rate=0.0, with_cp=True)).train()
    eager = copy.deepcopy(model)
    x = torch.randn(2, 3, 37, 29)
    torch._dynamo.reset()
    try:
        outs = torch.compile(model, backend='aot_eager')(x)
        sum(o.square().mean() for o in outs).backward()
    finally:
        torch._dynamo.reset()
    ref = eager(x)
    sum(o.square().mean() for o in ref).backward()
    for a, b in zip(outs, ref):
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-5
    for (n, p), q in zip(model.named_parameters(), eager.parameters()):
        assert (p.grad - q.grad).abs().max() <= 1e-5 * max(1.0, q.grad.abs().max()), n
    for (n, b), c in zip(model.named_buffers(), eager.buffers()):
        assert torch.equal(b, c) if not b.is_floating_point() else \
            (b - c).abs().max() <= 1e-6, n
    if name == 'cvt':
        assert int(model.stages[0].blocks[0].attn.conv_proj_q.bn.num_batches_tracked) == 1


# Size streams of a detection run (batches padded to different sizes), every level at least
# 2 x 2 cells (a map of one cell per side is specialised by PyTorch itself: a graph more at
# sizes below 33 px for stride-32 backbones):
# - Swin, window 4, stride 8 at stage 2: several windows there, then one (24 x 32), then several
# - ViT pretrained at a 4 x 4 patch grid (64 px): grids 3 x 5, 5 x 3, then the pretraining grid
STREAMS = {
    'swin': (lambda: SwinTransformer(arch=dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2)),
                                     window_size=4, out_indices=(0, 1), drop_path_rate=0.0),
             [(48, 64), (56, 40), (24, 32), (40, 72)]),
    'vit': (lambda: ViT(embed_dims=32, num_layers=2, num_heads=2, img_size=64,
                        drop_path_rate=0.0), [(48, 80), (80, 48), (64, 64), (96, 40)]),
}


@pytest.mark.parametrize('dynamic', [None, True])
@pytest.mark.parametrize('name', list(STREAMS))
def test_size_stream_compiles_few_graphs(name, dynamic):
    """A training stream of changing input sizes under ``torch.compile`` (``tools/train.py
    --compile``; ``dynamic=None``: PyTorch's automatic dynamic shapes) compiles at most 2
    graphs (the first size static, then one with symbolic sizes; 1 with ``dynamic=True``)
    and gives the eager outputs and gradients at every size. Had compiled a third graph for
    Swin where a stage went from several windows to one (PyTorch specialised the window
    count to > 1) and for ViT at the pretraining patch grid (the position embedding's "already
    this size" shortcut guarded on the grid); with ``dynamic=True`` Swin's training step had
    failed to compile (a dynamo assertion on a float default read in its attention's
    autograd.Function)."""
    from torch._dynamo.utils import counters
    build, sizes = STREAMS[name]
    torch.manual_seed(0)
    model = build().train()
    eager = copy.deepcopy(model)
    torch._dynamo.reset()
    counters.clear()
    try:
        compiled = torch.compile(model, backend='eager', dynamic=dynamic)
        for hw in sizes:
            x = torch.randn(2, 3, *hw)
            outs = compiled(x)
            sum(o.square().mean() for o in outs).backward()
            ref = eager(x)
            sum(o.square().mean() for o in ref).backward()
            for a, b in zip(outs, ref):
                assert a.shape == b.shape and (a - b).abs().max() <= 1e-5, hw
            for (n, p), q in zip(model.named_parameters(), eager.parameters()):
                assert (p.grad - q.grad).abs().max() <= 1e-5, (hw, n)
            model.zero_grad()
            eager.zero_grad()
        graphs = counters['stats']['unique_graphs']
    finally:
        torch._dynamo.reset()
    assert graphs <= (1 if dynamic else 2), graphs
