"""Fine-tuning as users start it: a whole mmdet/mmseg model built from our configs, with the
backbone's ``init_cfg=dict(type='Pretrained', ...)`` pointing at a released-format file; the
model's own ``init_weights()`` (what the Runner calls) must load the backbone so that it
computes what the source model computes."""
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmvtx.models.backbones.cvt import CvT
from tests.conftest import jitter_
from tests.models.backbones.test_cvt import LAYOUTS, _hf_cvt

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOL = 1e-4


def _build(config: str, registry_scope: str, backbone: dict, neck_key: str, widths):
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.model.backbone.update(backbone)
    cfg.model[neck_key].in_channels = widths
    if registry_scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    # the scope only while building: a default scope left behind would change what bare
    # type names resolve to in the tests that run after this one
    with DefaultScope.overwrite_default_scope(registry_scope):
        model = MODELS.build(cfg.model)
        model.init_weights()
    return model.eval()


def _assert_same_maps(source, backbone):
    """``backbone`` computes every map ``source`` returns (its first ``len(source(x))``)."""
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        expected, got = source(x), backbone(x)
    assert len(got) >= len(expected)
    for e, g in zip(expected, got):
        assert (e - g).abs().max() <= TOL


def _mask_rcnn_cvt(checkpoint):
    dims = list(LAYOUTS['small']['embed_dims'])
    return _build('configs/cvt/mask-rcnn_cvt-mini_fpn_700i_shapes.py', 'mmdet',
                  dict(LAYOUTS['small'], drop_path_rate=0.0,
                       init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
                  'neck', dims + dims[-1:])


def test_mask_rcnn_cvt_fine_tunes_from_a_transformers_checkpoint(tmp_path):
    from safetensors.torch import save_file
    ref = _hf_cvt('small')
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
              str(tmp_path / 'model.safetensors'))
    model = _mask_rcnn_cvt(str(tmp_path / 'model.safetensors'))
    _assert_same_maps(lambda x: ref(x, output_hidden_states=True).hidden_states,
                      model.backbone)


def test_mask_rcnn_cvt_fine_tunes_from_the_authors_checkpoint(tmp_path):
    """The authors' naming switches the MLPs to their QuickGELU while the detector's
    init_weights runs (new modules made in the middle of mmengine's bookkeeping)."""
    source = CvT(**LAYOUTS['small'], drop_path_rate=0.0, act='quick_gelu').eval()
    jitter_(source)
    torch.save({'stage' + k[len('stages.'):]: v for k, v in source.state_dict().items()
                if k.startswith('stages.')},
               tmp_path / 'CvT-small-224x224-IN-1k.pth')
    model = _mask_rcnn_cvt(str(tmp_path / 'CvT-small-224x224-IN-1k.pth'))
    assert model.backbone.stages[2].blocks[-1].mlp.act.name == 'quick_gelu'
    _assert_same_maps(source, model.backbone)


def test_upernet_swin_fine_tunes_from_an_mmdet_detector_checkpoint(tmp_path):
    from mmdet.models.backbones import SwinTransformer as MMDetSwin
    ref = MMDetSwin(embed_dims=48, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24),
                    window_size=7, drop_path_rate=0.0)
    ref.eval()  # mmdet's train() returns None
    jitter_(ref)
    # a whole detector checkpoint as mmdet saves it, the backbone under 'backbone.'
    torch.save({'meta': {}, 'state_dict': {f'backbone.{k}': v
                                           for k, v in ref.state_dict().items()}},
               tmp_path / 'mask_rcnn_swin.pth')
    model = _build('configs/swin/upernet_swin-mini-p4-w7_1000i_shapes-256x256.py', 'mmseg',
                   dict(drop_path_rate=0.0, always_shift=True, init_cfg=dict(
                       type='Pretrained', checkpoint=str(tmp_path / 'mask_rcnn_swin.pth'))),
                   'decode_head', [48, 96, 192, 384])
    _assert_same_maps(ref, model.backbone)


def test_mask_rcnn_vit_fine_tunes_from_another_pretraining_size(tmp_path):
    """A 224-px transformers ViT into the 256-px shapes detector: the position embedding is
    resized while the detector's init_weights runs, every other weight is taken as is."""
    from safetensors.torch import save_file
    from tests.models.backbones.test_vit import _hf_vit
    ref = _hf_vit()
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(sd, str(tmp_path / 'model.safetensors'))
    model = _build('configs/vit/mask-rcnn_vit-mini-p16_sfp_700i_shapes.py', 'mmdet',
                   dict(embed_dims=192, num_layers=4, num_heads=3, drop_path_rate=0.0,
                        init_cfg=dict(type='Pretrained',
                                      checkpoint=str(tmp_path / 'model.safetensors'))),
                   'neck', [48, 96, 192, 192])
    vit = model.backbone
    assert vit.pos_embed.shape == (1, 1 + 16 * 16, 192)
    assert torch.equal(vit.pos_embed[0, 0], sd['embeddings.position_embeddings'][0, 0])
    hf_fc1 = sd['layers.3.mlp.fc1.weight']  # transformers 5.x names
    assert torch.equal(dict(vit.named_parameters())['blocks.3.mlp.fc1.weight'], hf_fc1)
