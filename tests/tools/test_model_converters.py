"""tools/model_converters/*2mmvtx.py write files that load back to the same model."""
import torch

from mmvtx.models.backbones.swin import SwinTransformer
from mmvtx.models.backbones.vit import ViT
from mmvtx.utils.convert_cli import convert_main
from tests.conftest import jitter_


def test_swin2mmvtx_roundtrip(tmp_path):
    from mmdet.models.backbones import SwinTransformer as MMDetSwin
    ref = MMDetSwin(embed_dims=48, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24))
    ref.eval()
    jitter_(ref)
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in ref.state_dict().items()}},
               tmp_path / 'mmdet_swin.pth')
    for dst in ('swin.pth', 'swin.safetensors'):
        convert_main('SwinTransformer', 'tiny', [
            str(tmp_path / 'mmdet_swin.pth'), str(tmp_path / dst),
            '--options', '{"embed_dims": 48, "depths": [2, 2, 2, 2], "always_shift": true}'])
        model = SwinTransformer(embed_dims=48, depths=(2, 2, 2, 2), always_shift=True,
                                init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / dst)))
        model.init_weights()
        model.eval()
        x = torch.randn(1, 3, 64, 96)
        with torch.no_grad():
            assert max((a - b).abs().max() for a, b in zip(ref(x), model(x))) <= 1e-4


def test_vit2mmvtx_resizes_position_embedding(tmp_path):
    src = ViT(embed_dims=64, num_layers=2, num_heads=2, img_size=224)
    torch.save(src.state_dict(), tmp_path / 'vit.pth')
    convert_main('ViT', 'base', [str(tmp_path / 'vit.pth'), str(tmp_path / 'out.pth'),
                                 '--options', '{"embed_dims": 64, "num_layers": 2, '
                                 '"num_heads": 2, "img_size": 384}'])
    sd = torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict']
    assert sd['pos_embed'].shape == (1, 1 + 24 * 24, 64)
