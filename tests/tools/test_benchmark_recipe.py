"""tools/analysis_tools/benchmark_recipe.py runs both recipe pairs end to end (stand-in data, the
recipes' own pipelines, memory subprocesses included) and reports every loss term of mmvtx's model
equal to the mmdet/mmseg model's within the script's stated tolerance."""
import os.path as osp
import re
import sys

import pytest

from tests.engine.test_train_tools import run_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_recipe.py')
RTOL, ATOL = 1e-5, 1e-7  # the script's LOSS_RTOL / LOSS_ATOL
NUMBER = r'[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|nan|inf'


def loss_terms(out: str):
    """``{term: (mmvtx, reference)}`` from the first (fp32) loss table."""
    table = out.split('losses (fp32', 1)[1].split('loss agreement:', 1)[0]
    return {m[1]: (float(m[2]), float(m[3])) for m in re.finditer(
        rf'^  (\S+) +({NUMBER}) +({NUMBER}) +\S+ +\S+$', table, re.M)}


# Mask R-CNN: one image at the 1333x800 scale; UPerNet: two 512x512 crops (its pyramid pooling
# BN needs two samples a channel)
@pytest.mark.parametrize('preset, batch, loss_names', [
    ('mask-rcnn', 1, {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'}),
    ('upernet', 2, {'decode.loss_ce', 'aux.loss_ce'}),
])
def test_recipe_benchmark_losses_agree(preset, batch, loss_names, tmp_path):
    run = run_tool(
        [sys.executable, SCRIPT, '--preset', preset, '--batch-size', str(batch), '--repeats',
         '1', '--warmup', '0', '--data-root', str(tmp_path)] +
        # the memory subprocesses once (UPerNet, the cheaper iteration): each costs one more
        # iteration a model
        (['--no-memory'] if preset == 'mask-rcnn' else []), cwd=ROOT, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert 'the reference recipe\'s pipeline gives the same samples' in out, out
    terms = loss_terms(out)
    assert loss_names <= set(terms), out
    for name, (ours, ref) in terms.items():
        assert abs(ours - ref) <= RTOL * abs(ref) + ATOL, f'{name}: {ours} vs {ref}\n{out}'
    assert re.search(r'tolerance rel 1e-05 \(\+ abs 1e-07\): within', out), out
    if preset == 'mask-rcnn':  # the 1333x800 pipeline: a long side of 1333 or a short of 800
        h, w = map(int, re.search(r'inputs 1x3x(\d+)x(\d+)', out).groups())
        assert 800 <= max(h, w) <= 1344 and min(h, w) <= 800, out
        # the same proposals, at most reordered where two scores tie within float32 rounding
        proposals = re.search(r'RPN proposals: (.*)', out)[1]
        assert re.fullmatch(r'1000 in both, (the same boxes in the same order .*|\d+ box\(es\) '
                            r'at another rank .* float32 near-tie broken the other way\))',
                            proposals), out
        assert 'sampled RoIs: the same' in out, out
    else:
        assert re.search(r'inputs 2x3x512x512\b', out), out
    time_row = re.search(r'\| time, median of 1 \| (\S+) s \| (\S+) s \| (\S+)x \|', out)
    assert time_row and float(time_row[3]) > 0, out
    if preset == 'upernet':
        memory_row = re.search(r'\| peak memory \| (\S+) MiB \| (\S+) MiB \| (\S+)x \|', out)
        assert memory_row and float(memory_row[3]) > 0, out


@pytest.mark.parametrize('flags,message', [
    (['--batch-size', '0'], '--batch-size 0: must be >= 1'),  # was the recipe's 4, silently
    (['--batch-size', '-1'], '--batch-size -1: must be >= 1'),
    (['--repeats', '0'], '--repeats 0: must be >= 1'),
    (['--warmup', '-1'], '--warmup -1: must be >= 0'),
    (['--device', 'cuda:99'], '--device cuda:99: '),  # was torch's AssertionError on CPU torch
    (['--ours', 'no/such.py'], '--ours no/such.py: no such file')])  # was Config's traceback
def test_recipe_benchmark_refuses_bad_counts(flags, message, capsys):
    sys.path.insert(0, osp.dirname(SCRIPT))
    try:
        import benchmark_recipe
    finally:
        sys.path.remove(osp.dirname(SCRIPT))
    with pytest.raises(SystemExit) as exit_info:
        benchmark_recipe.parse_args(flags)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert benchmark_recipe.parse_args(['--batch-size', '1']).batch_size == 1
    assert benchmark_recipe.parse_args([]).batch_size is None  # the recipe's, in setup()


def test_recipe_benchmark_gradients_of_a_swin_are_all_matched():
    """The reference's Swin gradients, converted to mmvtx's layout, came with the converter's
    ``shift_rule`` record, a buffer: every Swin run printed 'UNMATCHED ['backbone.shift_rule']'
    beside the gradients, a mismatch that was none. The same gradients on both sides: every
    tensor matched, no difference."""
    import torch
    from mmdet.models.backbones import SwinTransformer as MMDetSwin

    from mmvtx.models.backbones import SwinTransformer
    sys.path.insert(0, osp.dirname(SCRIPT))
    try:
        import benchmark_recipe
    finally:
        sys.path.remove(osp.dirname(SCRIPT))
    torch.manual_seed(0)
    ref = MMDetSwin(embed_dims=16, depths=(1, 1), num_heads=(1, 2), window_size=4,
                    out_indices=(0, 1))
    ours = torch.nn.Module()
    ours.backbone = SwinTransformer(dict(embed_dims=16, depths=(1, 1), num_heads=(1, 2)),
                                    window_size=4, out_indices=(0, 1))
    ref_grads = {'backbone.' + k: torch.randn_like(p) for k, p in ref.named_parameters()}
    ref_grads['decode_head.conv_seg.weight'] = torch.randn(3, 8, 1, 1)
    converted = ours.backbone.convert_state_dict(
        {k[len('backbone.'):]: g for k, g in ref_grads.items() if k.startswith('backbone.')})
    own_names = {n for n, _ in ours.backbone.named_parameters()}
    our_grads = {'backbone.' + k: g for k, g in converted.state_dict.items() if k in own_names}
    our_grads['decode_head.conv_seg.weight'] = ref_grads['decode_head.conv_seg.weight']
    maps = [torch.ones(1, 16, 4, 4)]
    lines = benchmark_recipe.compare_maps_and_grads(
        ours, {'maps': maps, 'grads': our_grads}, {'maps': maps, 'grads': ref_grads})
    backbone = next(line for line in lines if line.startswith('gradients, backbone'))
    assert f'({len(own_names)} tensors): |diff| / |grad| 0.0e+00' in backbone, backbone
    assert 'UNMATCHED' not in '\n'.join(lines), lines
