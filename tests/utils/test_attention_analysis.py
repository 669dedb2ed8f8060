"""Mean attention distance (ViT paper, Figure 7) from recorded attention: analytic values for
constructed attention, positions of Swin's shifted windows and CvT's reduced keys, and the
recorder leaving the backbones' outputs unchanged."""
import itertools
import math

import pytest
import torch

from mmvtx.models.backbones import CvT, SwinTransformer, ViT
from mmvtx.models.layers.attention import AttentionRecorder
from mmvtx.utils.attention_analysis import (attention_distances, grid_positions,
                                            mean_attention_distance, record_attention,
                                            window_slot_positions)


def _mean_pairwise_distance(n: int, stride: float) -> float:
    cells = list(itertools.product(range(n), range(n)))
    total = sum(math.dist(a, b) for a in cells for b in cells)
    return total / len(cells) ** 2 * stride


@pytest.mark.parametrize('n,stride', [(3, 16.0), (5, 4.0)])
def test_uniform_attention_gives_the_mean_pairwise_distance(n, stride):
    pos = grid_positions(n, n, stride)
    probs = torch.full((2, 3, n * n, n * n), 1.0 / (n * n))
    got = mean_attention_distance(probs, pos, pos)
    assert got.shape == (3,)
    assert torch.allclose(got, torch.tensor(_mean_pairwise_distance(n, stride)).double())


def test_attention_to_self_gives_zero_and_to_a_neighbour_one_stride():
    pos = grid_positions(4, 4, 8.0)
    eye = torch.eye(16).expand(1, 2, 16, 16)
    assert mean_attention_distance(eye, pos, pos).abs().max() == 0
    right = torch.zeros(16, 16)  # every query looks one token to the right (or left at the end)
    for i in range(16):
        right[i, i + 1 if i % 4 < 3 else i - 1] = 1
    assert torch.allclose(mean_attention_distance(right.expand(1, 1, 16, 16), pos, pos),
                          torch.tensor([8.0]).double())


def test_shifted_window_slots_map_back_through_the_reverse_shift():
    """A 6x6 map, windows of 3 shifted by 1: slot (0, 0) of the first window holds the token
    at (1, 1); the last window wraps around, so its slots come from rows/cols 4, 5 and 0."""
    pos, valid = window_slot_positions(6, 6, 3, 1, stride=1.0)
    assert pos.shape == (4, 9, 2) and valid.all()
    assert pos[0, 0].tolist() == [1.5, 1.5]
    assert sorted({p[0] - 0.5 for p in pos[3].tolist()}) == [0, 4, 5]
    # every token appears exactly once
    assert len({tuple(p) for p in pos.reshape(-1, 2).tolist()}) == 36
    pos, valid = window_slot_positions(5, 4, 3, 0, stride=1.0)  # padded to 6 x 6
    assert valid.sum() == 20 and pos.shape == (4, 9, 2)


def _small(kind):
    torch.manual_seed(0)
    if kind == 'swin':
        return SwinTransformer(arch=dict(embed_dims=32, depths=(2, 2), num_heads=(1, 2)),
                               window_size=4, out_indices=(0, 1))
    if kind == 'vit':
        return ViT(embed_dims=64, num_layers=2, num_heads=4)
    if kind == 'vitdet':
        return ViT('vitdet-b', embed_dims=64, num_layers=2, num_heads=4, window_size=3,
                   global_attn_indexes=(1,), img_size=64, rel_pos_img_size=64)
    return CvT(arch=dict(embed_dims=(16, 32, 64), depths=(1, 1, 1), num_heads=(1, 2, 4)))


@pytest.mark.parametrize('kind', ['swin', 'vit', 'vitdet', 'cvt'])
def test_recorded_attention_is_the_models_and_changes_nothing(kind):
    model = _small(kind).eval()
    x = torch.randn(2, 3, 100, 132)
    with torch.no_grad():
        before = model(x)
    calls = record_attention(model, x)
    with torch.no_grad():
        after = model(x)
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    assert calls
    for c in calls:
        sums = c.probs.sum(-1)  # every real query's weights over the image's tokens
        if c.q_valid is not None:
            sums = sums.movedim(-2, -1)[..., c.q_valid, :]
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5), c.layer
        d = mean_attention_distance(c.probs, c.q_pos, c.k_pos, c.q_valid)
        assert d.shape == (c.probs.shape[-3],) and torch.isfinite(d).all() and (d >= 0).all()
        # no head looks farther than the image diagonal (padded slots are not keys)
        assert d.max() <= math.hypot(100, 132)
    if kind == 'cvt':  # stage 1 (stride 4): 25x33 queries, 13x17 keys at stride 8
        assert calls[0].probs.shape[-2:] == (25 * 33, 13 * 17)
        assert calls[0].k_pos[1].tolist() == [2.0, 10.0]
    if kind == 'swin':  # two W-MSA/SW-MSA blocks per stage; windows of 16 slots
        assert [c.layer for c in calls] == ['stages.0.blocks.0.attn', 'stages.0.blocks.1.attn',
                                            'stages.1.blocks.0.attn', 'stages.1.blocks.1.attn']


def test_shift_mask_keeps_wrapped_windows_local():
    """Through the shift mask, SW-MSA windows that wrap around the border put (almost) no
    weight on tokens from the opposite border: every query's attention-weighted distance stays
    within its window's extent (measured in image positions after the reverse shift)."""
    model = _small('swin').eval()
    x = torch.randn(1, 3, 64, 64)  # 16x16 tokens, windows of 4, shift 2
    calls = record_attention(model, x)
    shifted = calls[1]
    per_query = (shifted.probs.double() * torch.cdist(
        shifted.q_pos.double(), shifted.k_pos.double()).unsqueeze(-3)).sum(-1)
    assert per_query.max() <= math.hypot(3, 3) * 4 + 1e-6


def _window_slots(h, w, M, shift, stride):
    """Pixel centres of the slots of the ``h x w`` map zero-padded to multiples of ``M``, rolled
    by ``-shift`` and cut into ``M x M`` windows (``nW x M*M x 2``), and which are tokens."""
    Hp, Wp = -(-h // M) * M, -(-w // M) * M
    grid = torch.stack(torch.meshgrid(torch.arange(Hp), torch.arange(Wp), indexing='ij'), -1)
    grid = grid.roll((-shift, -shift), (0, 1))  # slot (i, j) holds the token at grid[i, j]
    slots = grid.view(Hp // M, M, Wp // M, M, 2).permute(0, 2, 1, 3, 4).reshape(-1, M * M, 2)
    return (slots.double() + 0.5) * stride, (slots[..., 0] < h) & (slots[..., 1] < w)


@pytest.mark.parametrize('kind', ['swin', 'vitdet'])
def test_padded_window_slots_are_not_keys(kind):
    """On a token map padded to the window, the padding lies outside the image: the distance
    is each real query's weights over the real keys of its window, renormalised to sum to 1
    (from the raw softmax, recomputed here), and no head looks beyond the image diagonal."""
    model = _small(kind).eval()
    H, W = 40, 56
    x = torch.randn(1, 3, H, W)
    with torch.no_grad(), AttentionRecorder() as rec:
        model(x)
    got = attention_distances(record_attention(model, x))
    if kind == 'swin':  # patch 4, windows of 4; 10x14 then 5x7 tokens, both shifted (> 4)
        layers = [(10, 14, 0, 4), (10, 14, 2, 4), (5, 7, 0, 8), (5, 7, 2, 8)]
    else:  # patch 16 (the image padded to 48x64): 3x4 tokens, windows of 3 in block 0
        layers = [(3, 4, 0, 16)]
    M = 4 if kind == 'swin' else 3
    with_padding = []
    for (h, w, shift, stride), (_, raw), (name, _, dist) in zip(layers, rec.calls, got):
        pos, real = _window_slots(h, w, M, shift, stride)
        p = raw.double().reshape(-1, *raw.shape[-3:])  # nW x heads x N x N (batch 1)
        d = ((pos[:, :, None] - pos[:, None]) ** 2).sum(-1).sqrt()  # nW x N x N
        kept = p * real[:, None, None, :]
        kept = kept / kept.sum(-1, keepdim=True)
        per_query = (kept * d[:, None]).sum(-1)  # nW x heads x N
        q = real[:, None, :].expand_as(per_query)
        expected = (per_query * q).sum((0, 2)) / q.sum((0, 2))
        assert torch.allclose(dist, expected, rtol=1e-6), name
        assert dist.max() <= math.hypot(H, W), name
        with_padding.append(((p * d[:, None]).sum(-1) * q).sum((0, 2)) / q.sum((0, 2)))
    # the padding matters here: kept as keys, it would change the figures
    assert any(not torch.allclose(a, b, rtol=1e-3) for a, b in
               zip(with_padding, (dist for _, _, dist in got)))
