"""What every mmvtx backbone promises the mmdet/mmseg necks and heads (DESIGN.md's interface):
a tuple of contiguous NCHW maps at strides 4/8/16/32, in train and eval mode alike.

Contiguity is not cosmetic: mmcv's CPU RoIAlign reads its input as contiguous NCHW memory
whatever its strides (open-mmlab/mmcv#2203), and a convolution keeps a channels-last layout, so a channels-last map
from the backbone reaches the RoI heads through the FPN as scrambled features (CvT trained
from scratch on shapes stayed at 0.01 bbox mAP until its maps were made contiguous)."""
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
