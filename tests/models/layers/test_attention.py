"""scaled_dot_product_attention folds inputs with several leading dims (Swin's
B x nW x heads x N x d) to the 4-D calls PyTorch's fused kernel takes, for every way a mask can
broadcast, with the same values and gradients as the plain formula."""
import math

import pytest
import torch

from mmvtx.models.layers import scaled_dot_product_attention

B, NW, HEADS, N, D = 2, 3, 4, 7, 8


def _reference(q, k, v, mask, scale):
    attn = (q.double() @ k.double().transpose(-2, -1)) * scale
    if mask is not None:
        attn = attn + mask.double()
    return attn.softmax(-1) @ v.double()


@pytest.mark.parametrize('mask_shape', [
    None, (HEADS, N, N), (NW, HEADS, N, N), (NW, 1, N, N), (1, NW, HEADS, N, N),
    (B, NW, HEADS, N, N), (B, 1, HEADS, N, N), (N, N), (NW, HEADS, 1, N)])
def test_folded_attention_matches_the_formula(mask_shape):
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, NW, HEADS, N, D, requires_grad=True) for _ in range(3))
    mask = torch.randn(mask_shape, requires_grad=True) if mask_shape else None
    out = scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    ref = _reference(q, k, v, mask, 0.3)
    assert out.shape == (B, NW, HEADS, N, D)
    assert (out.double() - ref).abs().max() < 1e-5
    inputs = (q, k, v) + ((mask,) if mask is not None else ())
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        assert (a.double() - b).abs().max() < 1e-4


@pytest.mark.parametrize('mask_shape', [(NW, HEADS, 49, 49), (HEADS, 49, 49)])
def test_swin_windows_run_the_fused_kernel(mask_shape):
    """W-MSA (bias only, a permuted view of a parameter) and SW-MSA (bias + mask per window)
    at inference: the fused CPU kernel, not the math path."""
    q, k, v = (torch.randn(B, NW, HEADS, 49, 32) for _ in range(3))
    table = torch.randn(*mask_shape[:-3], 49, 49, HEADS, requires_grad=True)
    mask = table.movedim(-1, -3)  # like Swin's bias: a non-contiguous view needing a gradient
    with torch.no_grad(), torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    names = {e.key for e in prof.key_averages()}
    assert 'aten::_scaled_dot_product_flash_attention_for_cpu' in names, names
    assert (out.double() - _reference(q, k, v, mask, 32 ** -0.5)).abs().max() < 1e-5


@pytest.mark.parametrize('pairs,N,L', [((1, 1), 1030, 1024), ((1, 1), 1025, 1500),
                                       ((2, 1), 2048, 600)])
def test_few_long_heads_split_their_queries(pairs, N, L, monkeypatch):
    """A training call with fewer (batch, head) pairs than threads (CvT's one-head first stage)
    runs as groups of queries over the same keys: same values and gradients as the formula
    (odd query counts padded and cropped), and the fused backward sees the extra heads."""
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 4)
    torch.manual_seed(0)
    q = torch.randn(*pairs, N, 16, requires_grad=True)
    k, v = (torch.randn(*pairs, L, 16, requires_grad=True) for _ in range(2))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                record_shapes=True) as prof:
        out = scaled_dot_product_attention(q, k, v, scale=0.25)
        grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    ref = _reference(q, k, v, None, 0.25)
    assert out.shape == (*pairs, N, 16) and (out.double() - ref).abs().max() < 1e-5
    for a, b in zip(grads, torch.autograd.grad(ref, (q, k, v), torch.ones_like(ref))):
        assert (a.double() - b).abs().max() < 1e-4 * max(1.0, b.abs().max().item())
    groups = -(-4 // (pairs[0] * pairs[1]))
    shapes = [e.input_shapes[0] for e in prof.key_averages(group_by_input_shape=True)
              if e.key == 'aten::_scaled_dot_product_flash_attention_for_cpu_backward']
    assert shapes and shapes[0][:2] == [pairs[0], pairs[1] * groups], shapes


def test_copy_count_reads_strides_as_view_does():
    """The fold's copy count decides from strides whether ``view`` would work (traceable by
    torch.compile); it agrees with trying the view, for permuted, sliced and expanded inputs."""
    from mmvtx.models.layers.attention import _copied
    torch.manual_seed(0)
    base = torch.randn(2, 3, 4, 5, 6)
    cases = [base, base.transpose(0, 1), base.permute(1, 0, 2, 3, 4), base[:, 1:],
             base.transpose(1, 2), base.expand(2, 3, 4, 5, 6), base[:, :1].expand(2, 3, 4, 5, 6),
             torch.randn(2, 1, 4, 5, 6).transpose(1, 2), base.unbind(0)[0].unsqueeze(0)]
    for t in cases:
        for k in range(0, 3):
            lead = t.shape[:k]
            try:
                t.view(math.prod(lead), -1, t.shape[-2], t.shape[-1])
                expected = 0
            except RuntimeError:
                expected = t.numel()
            assert _copied(t, batch_dims=lead) == expected, (t.shape, t.stride(), k)


@pytest.mark.parametrize('name', ['swin', 'vit', 'vitdet', 'dinov2-reg', 'dinov3', 'cvt'])
def test_backbones_compile_without_graph_breaks(name, monkeypatch):
    """``torch.compile`` captures each backbone's training step as one graph (no graph break:
    window geometry, attention kernel choice and the custom autograd functions all trace), and
    the compiled step (dynamo + AOT autograd, eager backend: the tracing, not inductor's code
    generation) gives the same outputs and gradients. With the oneDNN linear maps on (AMD
    CPUs' default) too: asking whether torch has oneDNN broke the graph at every linear map."""
    monkeypatch.setenv('MMVTX_ONEDNN_LINEAR', '1')  # AMD's default path, on any CPU
    from tests.models.backbones.test_autocast import MODELS
    make = MODELS[name]
    torch.manual_seed(0)
    model = make().train()
    x = torch.randn(2, 3, 96, 128)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, [str(r.reason)[:200]
                                              for r in explained.break_reasons]
    torch.manual_seed(1)
    ref = model(x)
    sum(o.square().mean() for o in ref).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch._dynamo.reset()
    torch.manual_seed(1)
    outs = torch.compile(model, backend='aot_eager')(x)
    sum(o.square().mean() for o in outs).backward()
    for a, b in zip(outs, ref):
        assert (a - b).abs().max() <= 1e-5
    for n, g in grads.items():
        assert (model.get_parameter(n).grad - g).abs().max() <= 1e-4, n


@pytest.mark.parametrize('kernel', ['sdpa', 'recompute'])
@pytest.mark.parametrize('mask_shape', [None, (NW, 1, N, N)])
def test_bias_gradient_kernels_match_the_formula(kernel, mask_shape, monkeypatch):
    """Both ways of training a bias (Swin's relative position bias, a permuted view of its
    table, plus the shift mask per window) give the formula's values and gradients for q, k, v
    and the table. ``'sdpa'`` is the CUDA route (the memory-efficient kernel's own bias
    gradient); on CPU the same call runs PyTorch's math path, which checks the route's
    mask composition, folding and broadcasting."""
    from mmvtx.models.layers.attention import attention
    monkeypatch.setenv('MMVTX_BIAS_GRAD', kernel)
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, NW, HEADS, N, D, requires_grad=True) for _ in range(3))
    table = torch.randn(N, N, HEADS, requires_grad=True)
    bias = table.permute(2, 0, 1)
    mask = (torch.rand(mask_shape) < 0.3) * -100.0 if mask_shape else None
    out = attention(q, k, v, bias=bias, mask=mask, scale=0.3)
    ref = _reference(q, k, v, bias + (0 if mask is None else mask), 0.3)
    assert out.shape == (B, NW, HEADS, N, D)
    assert (out.double() - ref).abs().max() < 1e-5
    g = torch.randn_like(out)
    inputs = (q, k, v, table)
    for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        assert (a.double() - b).abs().max() < 1e-4


def test_bias_gradient_kernel_choice(monkeypatch):
    from mmvtx.models.layers.attention import bias_grad_kernel
    q = torch.zeros(1)
    assert bias_grad_kernel(q) == 'recompute'  # auto, on CPU
    assert bias_grad_kernel(torch.zeros(1, device='meta')) == 'recompute'
    monkeypatch.setenv('MMVTX_BIAS_GRAD', 'sdpa')
    assert bias_grad_kernel(q) == 'sdpa'
    monkeypatch.setenv('MMVTX_BIAS_GRAD', 'flash')
    with pytest.raises(ValueError, match="MMVTX_BIAS_GRAD='flash'"):
        bias_grad_kernel(q)


def test_swin_trains_the_same_through_both_bias_kernels(monkeypatch):
    """A whole Swin (shifted windows, padding) gives the same loss gradients for every
    parameter through either bias-gradient kernel."""
    from mmvtx.models.backbones import SwinTransformer
    torch.manual_seed(0)
    model = SwinTransformer(embed_dims=32, depths=(2, 2), num_heads=(2, 4), window_size=4,
                            out_indices=(0, 1))
    for p in model.parameters():  # non-zero tables
        if p.dim() == 2 and p.shape[-1] in (2, 4):
            torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 3, 52, 60)
    weights = [torch.randn(2, 32, 13, 15), torch.randn(2, 64, 7, 8)]  # outputs are normed:
    grads = {}                                                         # a random projection
    for kernel in ('sdpa', 'recompute'):
        monkeypatch.setenv('MMVTX_BIAS_GRAD', kernel)
        model.zero_grad()
        sum((o * w).sum() for o, w in zip(model(x), weights)).backward()
        grads[kernel] = {n: p.grad.clone() for n, p in model.named_parameters()}
    tables = [n for n in grads['sdpa'] if 'relative_position_bias_table' in n]
    assert len(tables) == 4
    for n, g in grads['sdpa'].items():
        ref = grads['recompute'][n]
        assert (g - ref).abs().max() <= 1e-4 * ref.abs().max(), n


@pytest.mark.parametrize('name', ['swin', 'vitdet'])
def test_compiled_backbone_does_not_recompile_for_every_size(name, monkeypatch):
    """Detection batches change size: with PyTorch's automatic dynamic shapes the first size
    compiles a static graph and the first change one symbolic graph, which later sizes of the
    same kind (padding in every stage, several windows, batch > 1) reuse; the compiled
    outputs equal eager ones at each size. Windows are built by opaque custom ops while
    compiling (``mmvtx::window_token_index``, ``mmvtx::shifted_window_mask``). The oneDNN
    linear maps (AMD CPUs' default) give way to the compiler's: their batch split, a divisor of
    the token count, compiled a graph for most sizes."""
    monkeypatch.setenv('MMVTX_ONEDNN_LINEAR', '1')  # AMD's default path, on any CPU
    from mmvtx.models.backbones import SwinTransformer, ViT
    torch.manual_seed(0)
    model = (SwinTransformer(arch=dict(embed_dims=32, depths=(2, 2), num_heads=(1, 2)),
                             window_size=4, out_indices=(0, 1), drop_path_rate=0.0)
             if name == 'swin' else
             ViT('vitdet-b', embed_dims=64, num_layers=2, num_heads=4, window_size=3,
                 global_attn_indexes=(1,), img_size=64, rel_pos_img_size=64,
                 drop_path_rate=0.0)).train()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend('aot_eager')(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend)
    for i, size in enumerate([(2, 3, 100, 132), (2, 3, 116, 148), (2, 3, 132, 100),
                              (2, 3, 148, 180)]):
        x = torch.randn(size)
        outs = compiled(x)
        sum(o.square().mean() for o in outs).backward()
        with torch.no_grad():
            for a, b in zip(outs, model(x)):
                assert a.shape == b.shape and (a - b).abs().max() <= 1e-5
        assert len(graphs) == min(i + 1, 2), (size, len(graphs))
    torch._dynamo.reset()
