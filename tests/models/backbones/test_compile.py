"""torch.compile of the backbones with the options the graph-break tests leave out."""
import copy

import pytest
import torch

from mmvtx.models.backbones import CvT, SwinTransformer


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
