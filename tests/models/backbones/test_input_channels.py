"""An RGB checkpoint loads into a backbone built for another number of input channels (grey,
RGB-D, multispectral: ``in_channels``): its patch embedding is adapted as timm adapts its stems
(was a shape mismatch on the patch embedding, with no way to use the released weights)."""
import re

import pytest
import torch

from mmvtx.models.backbones.cvt import CvT
from mmvtx.models.backbones.swin import SwinTransformer
from mmvtx.models.backbones.vit import ViT
from mmvtx.utils import CheckpointMismatchError, load_backbone_checkpoint
from tests.conftest import jitter_

BUILD = {
    'swin': lambda c: SwinTransformer(dict(embed_dims=16, depths=(1, 1, 1, 1),
                                           num_heads=(1, 1, 1, 1)), in_channels=c,
                                      drop_path_rate=0.0),
    'vit': lambda c: ViT(dict(embed_dims=32, num_layers=2, num_heads=2), img_size=64,
                         in_channels=c, drop_path_rate=0.0),
    'cvt': lambda c: CvT(dict(embed_dims=(16, 32, 48), depths=(1, 1, 1), num_heads=(1, 2, 3)),
                         in_channels=c, drop_path_rate=0.0),
}


@pytest.mark.parametrize('arch', sorted(BUILD))
def test_an_rgb_checkpoint_loads_for_other_input_channels(tmp_path, arch):
    rgb = jitter_(BUILD[arch](3)).eval()
    torch.save(rgb.state_dict(), tmp_path / 'rgb.pth')
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        expected = rgb(x.expand(-1, 3, -1, -1))
        for channels, image in ((1, x), (6, x.expand(-1, 6, -1, -1)),  # grey; RGB twice
                                (4, None)):
            model = BUILD[arch](channels).eval()
            loaded = load_backbone_checkpoint(model, str(tmp_path / 'rgb.pth'))
            key = model.input_conv
            assert tuple(loaded.resized[key].shape[1:2]) == (3,)  # named as adapted
            if image is None:  # RGB-D: the RGB weights, scaled by 3/4, and the R weights again
                w = rgb.state_dict()[key]
                assert torch.allclose(model.state_dict()[key],
                                      torch.cat([w, w[:, :1]], 1) * 0.75)
                continue
            for e, g in zip(expected, model(image)):
                assert (e - g).abs().max() <= 1e-5
            # everything but the patch embedding is the checkpoint's
            assert all(torch.equal(v, rgb.state_dict()[k]) for k, v in
                       model.state_dict().items() if k != key)


def test_only_rgb_weights_are_adapted():
    """A file of another non-RGB channel count still does not fit: what its channels mean is
    not known."""
    four = BUILD['swin'](4)
    with pytest.raises(CheckpointMismatchError, match='patch_embed.proj.weight'):
        load_backbone_checkpoint(BUILD['swin'](3), four.state_dict())
    with pytest.raises(CheckpointMismatchError, match='patch_embed.proj.weight'):
        load_backbone_checkpoint(BUILD['swin'](2), four.state_dict())


@pytest.mark.parametrize('arch', ['swin', 'cvt'])
def test_an_rgb_whole_models_own_file_is_adapted_for_load_from(arch):
    """A detector trained here on RGB (mmvtx's own names), given as load_from to the same
    config with in_channels=4: ConvertCheckpointHook left own-named files as they were, so
    mmengine skipped the 3-channel patch embedding as mis-shaped and fine-tuning kept it at its
    random init (a file in mmdet's layout was adapted). It is adapted as init_cfg adapts it;
    tools/test.py still refuses to evaluate the file, naming its 3-channel shape."""
    from types import SimpleNamespace

    from mmengine.runner.checkpoint import _load_checkpoint_to_model
    from torch import nn

    from mmvtx.engine import CheckpointFitHook, ConvertCheckpointHook
    from mmvtx.models.layers.patch_embed import adapt_input_channels

    class Detector(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.backbone, self.neck = BUILD[arch](channels), nn.Conv2d(2, 2, 1)

    rgb = jitter_(Detector(3))
    model = Detector(4)
    key = 'backbone.' + model.backbone.input_conv
    file = {'state_dict': {k: v.clone() for k, v in rgb.state_dict().items()}}
    convert = ConvertCheckpointHook()
    runner = SimpleNamespace(model=model, hooks=[convert], _load_from='rgb_det.pth')
    convert.after_load_checkpoint(runner, file)
    with pytest.raises(CheckpointMismatchError, match=re.escape(
            f'{key}: checkpoint {tuple(rgb.state_dict()[key].shape)} vs model')):
        CheckpointFitHook().after_load_checkpoint(runner, file)
    CheckpointFitHook('fine-tuned').after_load_checkpoint(runner, file)
    _load_checkpoint_to_model(model, file, strict=True)
    assert torch.equal(model.state_dict()[key], adapt_input_channels(rgb.state_dict()[key], 4))
    assert all(torch.equal(v, rgb.state_dict()[k]) for k, v in model.state_dict().items()
               if k != key)
