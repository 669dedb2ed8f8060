"""mmvtx.CvT against Hugging Face transformers' CvtModel (random weights, CvT-13 layout and a
small one) loaded through the public loading path; the authors' naming; shapes; memory."""
import math

import pytest
import torch

from mmvtx.models.backbones.cvt import CvT
from mmvtx.utils import CheckpointMismatchError, load_backbone_checkpoint
from tests.conftest import jitter_

TOL = 1e-4
LAYOUTS = {
    'cvt-13': dict(embed_dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6)),
    'small': dict(embed_dims=(16, 32, 48), depths=(1, 2, 3), num_heads=(1, 2, 3)),
}


def _hf_cvt(layout):
    from transformers import CvtConfig, CvtModel
    a = LAYOUTS[layout]
    ref = CvtModel(CvtConfig(embed_dim=list(a['embed_dims']), depth=list(a['depths']),
                             num_heads=list(a['num_heads']), drop_path_rate=[0.0] * 3),
                   add_pooling_layer=False).eval()
    jitter_(ref)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for name, buf in ref.named_buffers():
            if name.endswith('running_var'):
                buf.uniform_(0.5, 1.5)
            elif name.endswith('running_mean'):
                buf.normal_(0, 0.1)
    return ref


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
@pytest.mark.parametrize('size', [(224, 224), (200, 296)])
def test_parity_with_transformers_cvt(layout, size):
    ref = _hf_cvt(layout)
    ours = CvT(**LAYOUTS[layout], output_cls_token=True, drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(ours, ref.state_dict()).source == 'transformers'
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = ref(x, output_hidden_states=True)
        got = ours(x)
    for e, g in zip(expected.hidden_states, got[:3]):
        assert e.shape == g.shape
        assert (e - g).abs().max() <= TOL
    assert (expected.cls_token_value[:, 0] - got[4]).abs().max() <= TOL
    assert torch.equal(got[3], torch.nn.functional.max_pool2d(got[2], 2, ceil_mode=True))


def authors_checkpoint(tmp_path):
    """A small CvT's random weights written in the authors' layout (QuickGELU in their code),
    and the same weights in an mmvtx CvT with GELU."""
    ref = _hf_cvt('small')
    gelu = CvT(**LAYOUTS['small'], drop_path_rate=0.0).eval()
    load_backbone_checkpoint(gelu, ref.state_dict())
    # the authors' checkpoint layout: stage{i}.patch_embed / blocks / cls_token, plus a head
    official = {'stage' + k[len('stages.'):]: v for k, v in gelu.state_dict().items()
                if k.startswith('stages.')}
    official.update({'norm.weight': torch.ones(48), 'norm.bias': torch.zeros(48),
                     'head.weight': torch.zeros(10, 48), 'head.bias': torch.zeros(10)})
    path = tmp_path / 'CvT-small-224x224-IN-1k.pth'
    torch.save(official, path)
    return str(path), gelu


def test_authors_naming_loads_to_the_same_outputs_with_quick_gelu(tmp_path):
    _, gelu = authors_checkpoint(tmp_path)
    auto = CvT(**LAYOUTS['small'], drop_path_rate=0.0, init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'CvT-small-224x224-IN-1k.pth')))
    auto.init_weights()
    auto.eval()
    # the released activation, set by name: no module was replaced while mmengine's init ran
    assert {m.act.name for m in auto.modules() if hasattr(m, 'fc1')} == {'quick_gelu'}
    quick = CvT(**LAYOUTS['small'], drop_path_rate=0.0, act='quick_gelu').eval()
    quick.load_state_dict(gelu.state_dict())
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        a, q, g = auto(x), quick(x), gelu(x)
    assert max((u - v).abs().max() for u, v in zip(a, q)) <= TOL
    assert max((u - v).abs().max() for u, v in zip(a, g)) > 1e-3  # GELU != QuickGELU


def test_attention_scale_is_the_full_width():
    model = CvT(**LAYOUTS['small'])
    assert model.stages[2].blocks[0].attn.scale == 48 ** -0.5  # not (48 / 3) ** -0.5


@pytest.mark.parametrize('H,W', [(1, 1), (3, 5), (31, 33), (33, 65), (97, 131), (224, 160)])
def test_output_shapes_any_size(H, W):
    model = CvT(**LAYOUTS['small']).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, H, W))
    for i, (o, s) in enumerate(zip(outs, (4, 8, 16, 32))):
        assert o.shape == (2, model.num_features[i], math.ceil(H / s), math.ceil(W / s))
    assert model.out_channels == (16, 32, 48, 48)


@pytest.mark.parametrize('H,W', [(1, 1), (32, 32), (17, 9)])
def test_one_small_training_image_is_refused_with_a_way_out(H, W):
    """Batch statistics need two values per channel: one training image whose last stage's
    keys and values are 1x1 is refused naming what to change; norm_eval=True (running
    statistics) trains on it with the documented shapes, and so does a batch of two."""
    with pytest.raises(ValueError, match=r'CvT: .* 1 image.*norm_eval=True'):
        CvT(**LAYOUTS['small']).train()(torch.randn(1, 3, H, W))
    for model, batch in ((CvT(**LAYOUTS['small'], norm_eval=True).train(), 1),
                         (CvT(**LAYOUTS['small']).train(), 2)):
        outs = model(torch.randn(batch, 3, H, W))
        sum(o.sum() for o in outs).backward()
        assert [o.shape[2:] for o in outs] == [(math.ceil(H / s), math.ceil(W / s))
                                               for s in (4, 8, 16, 32)]


def test_presets():
    for arch, params in (('13', 20.0e6), ('21', 31.6e6)):
        n = sum(p.numel() for p in CvT(arch).parameters())
        assert abs(n - params) / params < 0.05, (arch, n)  # paper's counts include the head
    assert CvT('w24').arch_settings['embed_dims'] == (192, 768, 1024)
    with pytest.raises(ValueError, match='unknown arch'):
        CvT('99')
    with pytest.raises(CheckpointMismatchError, match='not a CvT'):
        load_backbone_checkpoint(CvT('13'), {'fc.weight': torch.zeros(1)})


def test_first_stage_does_not_materialise_the_attention_matrix():
    """At 1333x800 stage 1 attends 66,800 queries x 16,700 keys: the full fp32 score matrix
    alone would be 4.5 GB; the forward pass must stay far below that."""
    import subprocess
    import sys
    code = (
        'import resource, torch, mmvtx\n'
        'from mmvtx.models.backbones.cvt import CvT\n'
        'm = CvT("13").eval()\n'
        'x = torch.randn(1, 3, 800, 1333)\n'
        'base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n'
        'with torch.no_grad():\n'
        '    outs = m(x)\n'
        'print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    peak_mib = float(out.stdout.strip().splitlines()[-1])
    assert peak_mib < 1500, peak_mib
