"""tools/analysis_tools/{attention_distance,draw_windows,cost_vs_resolution}.py: end to end on
shapes configs with a checkpoint (small sizes), the pictures' mask is the backbone's own, and
FLOPs counted from the operators match the papers' figures."""
import csv
import os.path as osp
import sys

import pytest
import torch

from tests.engine.test_train_tools import run_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(ROOT, 'tools', 'analysis_tools')
CONFIGS = {
    'swin': 'configs/swin/mask-rcnn_swin-mini-p4-w7_fpn_700i_shapes.py',
    'cvt': 'configs/cvt/upernet_cvt-mini_1000i_shapes-256x256.py',
    'vitdet': 'configs/vit/mask-rcnn_vitdet-mini-p16_sfp_700i_shapes.py',
}


def _run(args, **kw):
    out = run_tool([sys.executable] + args, cwd=ROOT, **kw)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def _checkpoint(config: str, path: str, seed: int) -> str:
    """A checkpoint of the config's whole model (mmengine's layout), random weights."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    import mmvtx  # noqa: F401
    cfg = Config.fromfile(osp.join(ROOT, config))
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # not left set for others
        model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({'meta': {'seed': seed}, 'state_dict': model.state_dict()}, path)
    return path


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    from mmvtx.datasets import prepare_shapes
    root = osp.join(ROOT, 'data', 'shapes')
    prepare_shapes(root)
    folder = tmp_path_factory.mktemp('imgs')
    import shutil
    for i in range(3):
        shutil.copy(osp.join(root, 'images', 'val', f'{i:06d}.png'), folder)
    return str(folder)


def _distances(csv_path):
    with open(csv_path) as f:
        return [(r['layer'], int(r['head']), float(r['mean_distance_px']))
                for r in csv.DictReader(f)]


@pytest.mark.parametrize('kind', list(CONFIGS))
def test_attention_distance_tool_end_to_end(kind, images, tmp_path):
    ckpt = _checkpoint(CONFIGS[kind], str(tmp_path / 'model.pth'), seed=1)
    out_dir = str(tmp_path / 'out')
    _run([osp.join(TOOLS, 'attention_distance.py'), CONFIGS[kind], ckpt, '--images', images,
          '--size', '96', '128', '--query', '40', '70', '--out-dir', out_dir])
    for name in ('attention_distance.csv', 'attention_distance.png', 'attention_query.png'):
        assert osp.getsize(osp.join(out_dir, name)) > 1000 or name.endswith('.csv'), name
    rows = _distances(osp.join(out_dir, 'attention_distance.csv'))
    assert rows and all(0 <= d <= (96 ** 2 + 128 ** 2) ** 0.5 for _, _, d in rows)
    layers = {layer for layer, _, _ in rows}
    assert len(layers) >= 4
    # the checkpoint's weights are the ones analysed: another checkpoint, other distances
    other = _checkpoint(CONFIGS[kind], str(tmp_path / 'other.pth'), seed=2)
    _run([osp.join(TOOLS, 'attention_distance.py'), CONFIGS[kind], other, '--images', images,
          '--size', '96', '128', '--out-dir', str(tmp_path / 'out2')])
    assert _distances(osp.join(tmp_path, 'out2', 'attention_distance.csv')) != rows


def test_attention_distance_keeps_one_layers_attention_maps_at_a_time(images, tmp_path,
                                                                      monkeypatch):
    """The tool kept every layer's attention maps until the forward pass ended: ViT-B's twelve
    global layers at 1024 px hold 9.7 GB (ViTDet-mini at 1024: 2.3 GB peak, now 1.4 GB). Each
    call's maps are measured (and drawn) as they come and dropped: when a call's positions are
    made, no earlier call's maps are alive; the figures are those of the whole list."""
    import weakref

    from mmvtx.utils import attention_analysis as aa
    made, alive_before = [], []
    positions = aa._positions

    def tracked(*args):
        alive_before.append(sum(ref() is not None for ref in made))
        call = positions(*args)
        made.append(weakref.ref(call.probs))
        return call

    monkeypatch.setattr(aa, '_positions', tracked)
    from matplotlib.figure import Figure
    scatter, save = {}, Figure.savefig

    def savefig(fig, path, *args, **kwargs):  # what the scatter's legend and x axis say
        if str(path).endswith('attention_distance.png'):
            fig.canvas.draw()
            ax = fig.axes[0]
            scatter['legend'] = [t.get_text() for t in ax.get_legend().get_texts()]
            scatter['ticks'] = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, 'savefig', savefig)
    ckpt = _checkpoint(CONFIGS['vitdet'], str(tmp_path / 'model.pth'), seed=1)
    tool = _tool('attention_distance')
    tool.main([CONFIGS['vitdet'], ckpt, '--images', images, '--max-images', '1', '--size',
               '64', '80', '--query', '10', '70', '--out-dir', str(tmp_path / 'out')])
    assert len(alive_before) == 6 and max(alive_before) == 0, alive_before
    # ViTDet's window and global blocks (2 and 5) told apart in the scatter, which had one
    # colour per layer and no legend; the layer axis has whole numbers only (it had 0.5, ...)
    assert scatter['legend'] == ['window attention', 'global attention'], scatter
    assert all(t.lstrip('−-').isdigit() for t in scatter['ticks']), scatter
    assert osp.getsize(tmp_path / 'out' / 'attention_query.png') > 1000
    # the same figures as from every call's maps at once
    monkeypatch.setattr(aa, '_positions', positions)
    backbone, cfg = aa.build_backbone(CONFIGS['vitdet'], ckpt)
    x, _ = tool.load_images(images, cfg, (64, 80), 1)
    whole = aa.attention_distances(aa.record_attention(backbone, x))
    got = _distances(tmp_path / 'out' / 'attention_distance.csv')
    assert [(layer, h) for layer, h, _ in got] == [
        (layer, h) for layer, _, d in whole for h in range(len(d))]
    assert [d for _, _, d in got] == pytest.approx(
        [v for _, _, d in whole for v in d.tolist()], abs=1e-3)


def test_attention_distance_tool_names_bad_inputs(tmp_path):
    out = run_tool([sys.executable, osp.join(TOOLS, 'attention_distance.py'),
                          CONFIGS['swin'], '--images', str(tmp_path), '--size', '64'], cwd=ROOT)
    assert out.returncode != 0 and f'--images {tmp_path}: no image' in out.stderr
    out = run_tool([sys.executable, osp.join(TOOLS, 'attention_distance.py'),
                          CONFIGS['swin'], '--images', str(tmp_path), '--size', '64',
                          '--query', '70', '3'], cwd=ROOT)
    assert out.returncode != 0 and '--query [70, 3]: outside the 64x64 image' in out.stderr
    # a checkpoint of another model: refused, naming the file and the config
    wrong = _checkpoint(CONFIGS['cvt'], str(tmp_path / 'cvt.pth'), seed=1)
    out = run_tool([sys.executable, osp.join(TOOLS, 'attention_distance.py'),
                          CONFIGS['swin'], wrong, '--images', str(tmp_path), '--size', '64'], cwd=ROOT)
    assert out.returncode != 0
    assert f'{wrong} does not fit the backbone of {CONFIGS["swin"]}' in out.stderr


def _tool(name):
    sys.path.insert(0, TOOLS)
    try:
        return __import__(name)
    finally:
        sys.path.remove(TOOLS)


def _parser_error(main, argv, capsys) -> str:
    """What ``main(argv)`` says when argparse refuses the flags (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize('flags,message', [
    (['--max-images', '0'], '--max-images 0: must be >= 1'),
    (['--max-images', '-2'], '--max-images -2: must be >= 1'),
    (['--max-heads', '0'], '--max-heads 0: must be >= 1')])
def test_attention_distance_refuses_bad_counts(flags, message, tmp_path, capsys):
    err = _parser_error(_tool('attention_distance').main,
                        [CONFIGS['swin'], '--images', str(tmp_path)] + flags, capsys)
    assert message in err


def test_attention_distance_names_an_unreadable_image(tmp_path):
    from mmengine.config import Config
    (tmp_path / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n\x00')
    with pytest.raises(ValueError, match=f'{tmp_path / "broken.png"} could not be read'):
        _tool('attention_distance').load_images(str(tmp_path), Config(dict(model=dict())),
                                                (32, 32), 1)


def test_attention_distance_reads_a_folder_with_brackets_in_its_name(tmp_path, images):
    """``--images 'runs/exp[1]'``: the folder's name was read as a glob pattern (``[1]``
    matches ``1``), so its images were not found."""
    import shutil

    from mmengine.config import Config
    folder = tmp_path / 'exp[1]'
    shutil.copytree(images, folder)
    batch, paths = _tool('attention_distance').load_images(
        str(folder), Config(dict(model=dict())), (32, 48), 2)
    assert batch.shape == (2, 3, 32, 48)
    assert paths == [str(folder / '000000.png'), str(folder / '000001.png')]


def test_attention_distance_takes_an_image_file(tmp_path, capsys):
    """``--images photo.png`` (a user's own picture, here grayscale, and an RGBA TIFF in a
    folder) stopped with a FileNotFoundError traceback, 'no image there'; a .tif was not
    seen. A file is analysed itself; what is neither file nor folder is refused by name."""
    import numpy as np
    from mmengine.config import Config
    from PIL import Image
    rng = np.random.RandomState(0)
    gray = tmp_path / 'gray.png'
    Image.fromarray(rng.randint(0, 255, (37, 53), np.uint8), 'L').save(gray)
    (tmp_path / 'sub').mkdir()
    rgba = tmp_path / 'sub' / 'rgba.tif'
    Image.fromarray(rng.randint(0, 255, (40, 30, 4), np.uint8), 'RGBA').save(rgba)
    tool = _tool('attention_distance')
    cfg = Config(dict(model=dict(data_preprocessor=dict(mean=[0, 0, 0], std=[1, 1, 1]))))
    batch, paths = tool.load_images(str(gray), cfg, (32, 48), 8)
    assert paths == [str(gray)] and batch.shape == (1, 3, 32, 48)
    assert torch.equal(batch[0, 0], batch[0, 2])  # gray: the same values in R, G and B
    batch, paths = tool.load_images(str(tmp_path / 'sub'), cfg, (32, 48), 8)
    assert paths == [str(rgba)] and batch.shape == (1, 3, 32, 48)
    missing = str(tmp_path / 'none.png')
    err = _parser_error(tool.main, [CONFIGS['swin'], '--images', missing], capsys)
    assert f'--images {missing}: no such file or folder' in err


def test_analysis_tools_name_another_codebases_backbone(tmp_path, capsys):
    """A detector config with mmdet's ResNet: the tools said its backbone was 'NoneType'
    (build_backbone returned ``backbone.eval()``, which is None for mmdet's ResNet)."""
    config = tmp_path / 'resnet.py'
    config.write_text("default_scope = 'mmdet'\n"
                      "model = dict(type='mmdet.ResNet', depth=18, num_stages=2, "
                      "out_indices=(0, 1), strides=(1, 2), dilations=(1, 1))\n")
    from mmvtx.utils.attention_analysis import build_backbone
    backbone, _ = build_backbone(str(config))
    assert type(backbone).__name__ == 'ResNet' and not backbone.training
    err = _parser_error(_tool('attention_distance').main,
                        [str(config), '--images', str(tmp_path)], capsys)
    assert 'got ResNet' in err, err
    err = _parser_error(_tool('draw_windows').main,
                        ['--config', str(config), '--out', str(tmp_path)], capsys)
    assert 'its backbone, ResNet, is not an mmvtx Swin' in err, err


def test_build_backbone_checkpoints(tmp_path):
    """The analysis tools' backbone loading: a backbone-only checkpoint (as
    tools/model_converters/*2mmvtx.py write) and a released layout (mmdet's) load into the
    backbone; a bigger model's checkpoint (extra blocks) is refused, naming an extra key."""
    from mmdet.models.backbones import SwinTransformer as MMDetSwin

    from mmvtx.models.backbones import SwinTransformer
    from mmvtx.utils.attention_analysis import build_backbone
    from mmvtx.utils.checkpoint import CheckpointMismatchError
    config = osp.join(ROOT, CONFIGS['swin'])
    torch.manual_seed(3)
    arch = dict(embed_dims=48, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24))
    alone = SwinTransformer(arch=arch).state_dict()
    torch.save(alone, tmp_path / 'backbone.pth')
    backbone, _ = build_backbone(config, str(tmp_path / 'backbone.pth'))
    assert all(torch.equal(v, alone[k]) for k, v in backbone.state_dict().items())
    ref = MMDetSwin(embed_dims=48, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24))
    torch.save({'state_dict': ref.state_dict()}, tmp_path / 'mmdet.pth')
    backbone, _ = build_backbone(config, str(tmp_path / 'mmdet.pth'))
    assert torch.equal(backbone.patch_embed.proj.weight, ref.patch_embed.projection.weight)
    bigger = SwinTransformer(arch=dict(arch, depths=(2, 2, 4, 2))).state_dict()
    torch.save({'state_dict': {'backbone.' + k: v for k, v in bigger.items()}},
               tmp_path / 'bigger.pth')
    with pytest.raises(CheckpointMismatchError, match=r'unexpected keys \(26\): '
                       r'stages\.2\.blocks\.2\.'):
        build_backbone(config, str(tmp_path / 'bigger.pth'))


@pytest.mark.parametrize('H,W,M', [(14, 14, 7), (10, 13, 4), (9, 9, 3)])
def test_drawn_mask_is_the_backbones_and_matches_the_regions(H, W, M):
    """The mask drawn is the one Swin's SW-MSA blocks use (the stage's own geometry), and it
    is exactly 'blocked across the drawn regions' in every window."""
    sys.path.insert(0, TOOLS)
    try:
        from draw_windows import window_figures
    finally:
        sys.path.remove(TOOLS)
    from mmvtx.models.backbones.swin import SwinStage
    from mmvtx.models.layers.window import window_partition
    (Hp, Wp), window_id, regions, mask = window_figures(H, W, M, M // 2)
    stage = SwinStage(32, 2, 2, M, drop_paths=[0.0, 0.0], downsample=False)
    own = stage.geometry(H, W, torch.device('cpu')).mask
    assert torch.equal(mask, own)
    labels = window_partition(regions[None, :, :, None], M)[0, ..., 0]  # nW x N
    blocked = labels[:, :, None] != labels[:, None, :]
    assert torch.equal(mask, blocked.float() * -100.0)
    assert window_id.max() + 1 == (Hp // M) * (Wp // M) == mask.shape[0]


def test_draw_windows_tool_end_to_end(tmp_path):
    ckpt = _checkpoint(CONFIGS['swin'], str(tmp_path / 'model.pth'), seed=1)
    out = _run([osp.join(TOOLS, 'draw_windows.py'), '--map', '10', '13',
                '--config', CONFIGS['swin'], '--checkpoint', ckpt, '--block', 'stages.1.blocks.1',
                '--head', '1', '--out', str(tmp_path / 'w')])
    assert 'window 7, shift 3: wrote' in out  # the config's windows (7), mmdet's shift rule
    for name in ('windows.png', 'relative_position.png'):
        assert osp.getsize(tmp_path / 'w' / name) > 1000
    out = run_tool([sys.executable, osp.join(TOOLS, 'draw_windows.py'), '--window', '4',
                          '--config', CONFIGS['swin'], '--out', str(tmp_path / 'w')], cwd=ROOT)
    assert out.returncode != 0 and ('--window 4: stages.0.blocks.1 of ' + CONFIGS['swin'] +
                                    ' has windows of 7') in out.stderr, out.stderr[-2000:]
    out = run_tool([sys.executable, osp.join(TOOLS, 'draw_windows.py'), '--window', '4',
                          '--shift', '4', '--out', str(tmp_path / 'w')], cwd=ROOT)
    assert out.returncode != 0 and '--shift 4: must be in [0, window=4)' in out.stderr


@pytest.mark.parametrize('H,W,M,shift', [(14, 14, 7, 3), (9, 11, 4, 1)])
def test_draw_windows_pictures_show_every_title_and_the_windows_of_the_mask(H, W, M, shift,
                                                                            tmp_path):
    """The default picture (14x14, window 7) had the first line of its three titles cut off at
    the top (tight_layout left the square panels room they then grew into), and the mask
    panel drew the gaps between windows white like a 0 entry, so windows without -100 merged
    into one white area: nothing may touch the picture's border, and the gaps have a colour."""
    import matplotlib.pyplot as plt
    tool = _tool('draw_windows')
    tool.main(['--map', str(H), str(W), '--window', str(M), '--shift', str(shift),
               '--out', str(tmp_path)])
    for name in ('windows.png', 'relative_position.png'):
        img = plt.imread(str(tmp_path / name))[..., :3]
        for edge in (img[0], img[-1], img[:, 0], img[:, -1]):  # the background only
            assert edge.min() > 0.99, name
    img = plt.imread(str(tmp_path / 'windows.png'))[..., :3]
    gap = torch.tensor([int(tool.GAP_COLOUR[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    mask_panel = torch.from_numpy(img[:, 2 * img.shape[1] // 3:].copy())
    is_gap = ((mask_panel - gap).abs().amax(-1) < 0.02)
    rows_with_gap = is_gap.any(1).sum().item()
    assert rows_with_gap > 0.5 * mask_panel.shape[0]  # a gap beside every window row


@pytest.mark.parametrize('H,W,M,always,shift', [
    (7, 7, 7, False, 0), (7, 7, 7, True, 3), (8, 14, 7, False, 3), (14, 4, 4, False, 0),
    (14, 5, 4, False, 2)])
def test_draw_windows_follows_the_stages_shift_rule(H, W, M, always, shift):
    """No shift where min(H, W) <= window by the authors' rule; every block with mmdet's."""
    assert _tool('draw_windows').stage_shift(H, W, M, M // 2, always) == shift


def test_draw_windows_says_when_blocks_do_not_shift(tmp_path, capsys):
    tool = _tool('draw_windows')
    tool.main(['--map', '7', '7', '--window', '7', '--out', str(tmp_path / 'a')])
    assert ("SW-MSA blocks do not shift: min(H, W) = 7 <= window 7 (the authors' rule"
            in capsys.readouterr().out)
    tool.main(['--map', '7', '7', '--window', '7', '--always-shift', '--out', str(tmp_path)])
    assert 'do not shift' not in capsys.readouterr().out
    err = _parser_error(tool.main, ['--checkpoint', 'x.pth'], capsys)
    assert '--checkpoint x.pth needs --config' in err
    err = _parser_error(tool.main, ['--always-shift', '--config', CONFIGS['swin']], capsys)
    assert '--always-shift with --config' in err


def _cost_tool():
    sys.path.insert(0, TOOLS)
    try:
        import cost_vs_resolution
    finally:
        sys.path.remove(TOOLS)
    return cost_vs_resolution


def test_cost_vs_resolution_sizes_and_table_flags(tmp_path, capsys, monkeypatch):
    """Sizes deduplicated and sorted, two distinct needed (a duplicate divided by zero in the
    fit after all the work); --table honours --models and takes no --sizes."""
    tool = _cost_tool()
    err = _parser_error(tool.main, ['--models', 'cvt-13', '--sizes', '64', '64'], capsys)
    assert '--sizes [64, 64]: give two or more distinct sizes >= 32' in err
    err = _parser_error(tool.main, ['--table', '--sizes', '64', '96'], capsys)
    assert '--sizes [64, 96] with --table' in err
    with pytest.raises(ValueError, match=r'sizes \[64, 64\]: a slope needs two distinct'):
        tool.fit_exponent([64, 64], [1.0, 2.0])
    assert tool.fit_exponent([32, 64, 128], [3.0, 12.0, 48.0]) == pytest.approx(1.0)
    calls = []
    monkeypatch.setattr(tool, 'cost_curves', lambda models, sizes, *a: calls.append(
        (models, sizes)))
    monkeypatch.setattr(tool, 'params_flops_table', lambda names, out: calls.append(names))
    tool.main(['--models', 'cvt-13', '--sizes', '96', '64', '96', '--out-dir', str(tmp_path)])
    tool.main(['--table', '--models', 'swin-t', 'cvt-13', '--out-dir', str(tmp_path)])
    tool.main(['--table', '--out-dir', str(tmp_path)])
    assert calls == [(['cvt-13'], [64, 96]), ['swin-t', 'cvt-13'], list(tool.PRESETS)]


def test_preset_flops_match_the_papers():
    """Params and FLOPs of every preset with a published figure, counted from the operators
    at 224x224: FLOPs within 3 %, params within 5 % (published counts include the
    classifier)."""
    tool = _cost_tool()
    for name, (pub_params, pub_gflops, _) in tool.PUBLISHED.items():
        n, (gmacs, ) = tool.preset_figures(name)
        assert abs(gmacs / pub_gflops - 1) < 0.03, (name, gmacs, pub_gflops)
        assert abs(n / pub_params - 1) < 0.05, (name, n, pub_params)


@pytest.mark.parametrize('name', ['swin-t', 'vit-b', 'cvt-13'])
def test_flop_counter_sees_every_attention_call(name):
    """Fused CPU attention counted by mmvtx's mapping gives the FLOPs of PyTorch's math path
    (plain matrix products, which the counter always saw) — no attention call is missed."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from mmvtx.utils.flops import count_flops
    model = _cost_tool().build(name).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        fused = count_flops(lambda: model(x))
        with sdpa_kernel(SDPBackend.MATH):
            math_path = count_flops(lambda: model(x))
    assert fused.attention > 0
    assert fused.total == math_path.total


def test_cost_vs_resolution_tool_end_to_end(tmp_path):
    out = _run([osp.join(TOOLS, 'cost_vs_resolution.py'), '--models', 'cvt-13',
                'mmdet-swin-t', '--sizes', '64', '96', '--out-dir', str(tmp_path)])
    assert osp.getsize(tmp_path / 'cost_vs_resolution.png') > 1000
    with open(tmp_path / 'cost_vs_resolution.csv') as f:
        rows = list(csv.DictReader(f))
    assert [(r['model'], r['size']) for r in rows] == [
        ('cvt-13', '64'), ('cvt-13', '96'), ('mmdet-swin-t', '64'), ('mmdet-swin-t', '96')]
    assert all(float(r['gflops']) > 0 and float(r['time_s']) > 0 and float(r['memory_mib']) > 0
               for r in rows)
    assert 'exponent cvt-13         gflops     k = ' in out
    bad = run_tool([sys.executable, osp.join(TOOLS, 'cost_vs_resolution.py'), '--models',
                          'swin-x'], cwd=ROOT)
    assert bad.returncode != 0 and "--models 'swin-x'" in bad.stderr


@pytest.mark.parametrize('sizes', [[97, 131], [224, 448], [224, 448, 672, 896, 1120, 1344]])
def test_cost_vs_resolution_axis_labels_do_not_overlap(sizes, tmp_path, monkeypatch):
    """With sizes spanning less than a decade of pixels (97 131, 224 448) matplotlib labelled
    every minor tick of the log axis, the labels printed over each other: the x labels of every
    panel are readable (no two overlap) and there are at least two of them."""
    from matplotlib.figure import Figure
    tool = _cost_tool()
    monkeypatch.setattr(tool, 'build', lambda name: torch.nn.Identity())
    monkeypatch.setattr(tool, 'encoder_flops', lambda model, x: (x.shape[-1] ** 2 * 1e6, 0))
    monkeypatch.setattr(tool, 'measure', lambda name, model, x: (x.shape[-1] ** 2 * 1e-5,
                                                                 100 + x.shape[-1] * 0.5))
    labels = []
    save = Figure.savefig

    def savefig(fig, *args, **kwargs):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            labels.append([(t.get_text(), t.get_window_extent(renderer))
                           for t in ax.get_xticklabels(which='both')
                           if t.get_visible() and t.get_text()])
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, 'savefig', savefig)
    tool.cost_curves(['swin-t', 'vit-b'], sizes, False, str(tmp_path))
    assert len(labels) == 3  # GFLOPs, time, memory
    for panel in labels:
        assert len(panel) >= 2, panel
        for i, (text, box) in enumerate(panel):
            for other, other_box in panel[i + 1:]:
                assert not box.overlaps(other_box), (text, other, sizes)


def test_analysis_tools_name_a_config_block_or_head_that_does_not_fit(tmp_path, capsys):
    """A ``--config`` of another backbone (or no file), a ``--block`` or ``--head`` the model
    does not have stopped with a ValueError traceback (FileNotFoundError for the file); they
    are refused as a bad flag is, naming the value."""
    tool = _tool('draw_windows')
    swin = CONFIGS['swin']
    for flags, message in (
            (['--config', CONFIGS['cvt']], f"--config {CONFIGS['cvt']}: its backbone, CvT, "
             'is not an mmvtx Swin'),
            (['--config', 'no/such.py'], '--config no/such.py: no such file'),
            (['--config', swin, '--checkpoint', 'no.pth'], '--checkpoint no.pth: no such file'),
            (['--config', swin, '--block', 'stages.9.blocks.0'],
             f'--block stages.9.blocks.0: not a Swin block of {swin} (its blocks: '
             'stages.0.blocks.0 ... stages.3.blocks.1)'),
            (['--config', swin, '--head', '7'], '--head 7: stages.0.blocks.1 has 3 heads '
             '(0 to 2)')):
        err = _parser_error(tool.main, flags + ['--out', str(tmp_path)], capsys)
        assert message in err, err
    err = _parser_error(_tool('attention_distance').main,
                        ['no/such.py', '--images', str(tmp_path)], capsys)
    assert 'config no/such.py: no such file' in err


def test_attention_distance_reads_images_as_the_backbone_takes_them(tmp_path):
    """A model of grey images (``in_channels=1``, a one-value mean and std, as a user's config
    for 1-channel data has them): the tool stopped with ``RuntimeError: shape '[3, 1, 1]' is
    invalid for input of size 1``. Images are read with the backbone's channels (grey as
    mmcv's ``color_type='grayscale'``; 4 as the file's own), normalised by the config."""
    import cv2
    import numpy as np
    from mmengine.config import Config
    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 256, (32, 48, 3), np.uint8)
    cv2.imwrite(str(tmp_path / 'a.png'), rgb)
    cv2.imwrite(str(tmp_path / 'b.png'), rgb[..., 0])  # a grey file
    tool = _tool('attention_distance')
    grey_cfg = Config(dict(model=dict(data_preprocessor=dict(mean=[100.0], std=[50.0]))))
    batch, _ = tool.load_images(str(tmp_path), grey_cfg, (32, 48), 2, channels=1)
    assert batch.shape == (2, 1, 32, 48)
    expected = [cv2.imread(str(tmp_path / n), cv2.IMREAD_GRAYSCALE) for n in ('a.png', 'b.png')]
    for got, want in zip(batch, expected):
        assert torch.allclose(got[0], (torch.from_numpy(want).float() - 100) / 50)
    rgb_cfg = Config(dict(model=dict(data_preprocessor=dict(
        mean=[1.0, 2.0, 3.0], std=[1.0, 1.0, 1.0], bgr_to_rgb=True))))
    batch, _ = tool.load_images(str(tmp_path), rgb_cfg, (32, 48), 1)  # unchanged for RGB
    assert torch.equal(batch[0], torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1)
                       .float() - torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1))
    # a data preprocessor that swaps no channels and normalises nothing (mmdet's/mmseg's
    # defaults): the model takes BGR pixel values, as from its pipeline (was RGB, ImageNet)
    batch, _ = tool.load_images(str(tmp_path), Config(dict(model=dict(
        data_preprocessor=dict(type='DetDataPreprocessor')))), (32, 48), 1)
    assert torch.equal(batch[0], torch.from_numpy(rgb).permute(2, 0, 1).float())
    with pytest.raises(ValueError, match=r'a.png has 3 channels, the backbone takes 4'):
        tool.load_images(str(tmp_path), Config(dict(model=dict())), (32, 48), 1, channels=4)
    with pytest.raises(ValueError, match=r'mean has 3 values, the backbone takes 1'):
        tool.load_images(str(tmp_path), rgb_cfg, (32, 48), 1, channels=1)
    # the command on a grey model's config, end to end
    cfg = tmp_path / 'grey.py'
    cfg.write_text(f"_base_ = {osp.join(ROOT, CONFIGS['swin'])!r}\n"
                   "model = dict(data_preprocessor=dict(mean=[100.0], std=[50.0], "
                   "bgr_to_rgb=False), backbone=dict(in_channels=1))\n")
    tool.main([str(cfg), '--images', str(tmp_path), '--size', '32', '--max-images', '2',
               '--out-dir', str(tmp_path / 'out')])
    rows = _distances(str(tmp_path / 'out' / 'attention_distance.csv'))
    assert rows and all(np.isfinite(d) and d >= 0 for _, _, d in rows)
    assert max(d for _, _, d in rows) > 0
