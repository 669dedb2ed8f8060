"""Recipe fidelity: every GPU recipe under ``configs/{swin,vit,cvt}`` is its twin's recipe with the
backbone swapped, down to the field.

The twins and the differences allowed are not written here but read from the tables of each
folder's ``README.md`` (between ``<!-- fidelity:pairs -->`` and ``<!-- fidelity:differences -->``),
so the documentation and the check cannot drift apart:

* pairs: our config, its twin (``mmdet::``/``mmseg::`` inside the installed packages, or a path
  in this repository), and ``GPUs x images`` of both, which must give the same images a step and
  agree with the configs' ``train_dataloader.batch_size`` and the ``NxbM`` of the file names;
* differences: field paths, the recipes they apply to (file names, ``*`` patterns or ``all``),
  both values and the reason. A row covers its paths and everything below them.

Both configs are merged as ``tools/train.py`` merges them, and every field the runner reads
(``model``, the dataloaders, loops, optimizer, schedulers, evaluators, hooks, runtime...) is walked
recursively, except ``model.backbone``: the backbones are different classes, so only their
training options are compared, mapped to one vocabulary by ``backbone_options`` (drop path, window,
out indices, checkpointing, frozen stages, dimensions...), with each class's defaults filled in.
The test fails on any difference the README does not list, and on a listed one that has gone.
Config parsing only: nothing is built.
"""
import fnmatch
import inspect
import os.path as osp
import re
from functools import lru_cache
from typing import Dict, List, Tuple

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FOLDERS = ('swin', 'vit', 'cvt')
# what mmengine's Runner (and mmseg's tools/test.py --tta) reads from a config; any other top-level
# name is a helper variable (crop_size, pretrained, max_epochs...) whose effect shows up here
RUNNER_KEYS = (
    'default_scope', 'custom_imports', 'model', 'data_preprocessor', 'train_dataloader',
    'val_dataloader', 'test_dataloader', 'train_cfg', 'val_cfg', 'test_cfg', 'optim_wrapper',
    'param_scheduler', 'val_evaluator', 'test_evaluator', 'auto_scale_lr', 'default_hooks',
    'custom_hooks', 'env_cfg', 'log_processor', 'log_level', 'visualizer', 'load_from', 'resume',
    'launcher', 'randomness', 'tta_model', 'tta_pipeline', 'work_dir', 'experiment_name')
MISSING = '<absent>'


# ----------------------------------------------------------------------------- README tables
def _table_after(text: str, marker: str) -> List[List[str]]:
    """The cells of the markdown table that follows ``marker`` (header and rule dropped)."""
    assert marker in text, f'no {marker} in the README'
    lines = text.split(marker, 1)[1].strip().splitlines()
    rows = []
    for line in lines:
        if not line.startswith('|'):
            break
        rows.append([c.strip() for c in line.strip().strip('|').split('|')])
    assert len(rows) > 2, f'the table after {marker} is empty'
    return rows[2:]


def _code(cell: str) -> str:
    m = re.fullmatch(r'`([^`]+)`', cell)
    assert m, f'expected one `code` cell, got {cell!r}'
    return m[1]


@lru_cache(None)
def readme(folder: str) -> Tuple[list, list]:
    """``(pairs, differences)`` of ``configs/<folder>/README.md``:
    pairs ``(ours, twin, (gpus, images), (twin gpus, twin images))``,
    differences ``(path, [recipe patterns], reason)``, one per path of a row."""
    with open(osp.join(ROOT, 'configs', folder, 'README.md')) as f:
        text = f.read()
    pairs = []
    for row in _table_after(text, '<!-- fidelity:pairs -->'):
        m = re.fullmatch(r'(\d+)x(\d+) = (\d+)x(\d+)', row[2])
        assert m, f'GPUs x images cell {row[2]!r}: write "4x4 = 8x2"'
        pairs.append((_code(row[0]), _code(row[1]), (int(m[1]), int(m[2])),
                      (int(m[3]), int(m[4]))))
    diffs = []
    for row in _table_after(text, '<!-- fidelity:differences -->'):
        assert len(row) == 5 and row[4], f'a difference needs path, recipes, ours, twin, why: {row}'
        recipes = ['*'] if row[1] == 'all' else [_code(c.strip()) for c in row[1].split(',')]
        diffs.extend((_code(c.strip()), recipes, row[4]) for c in row[0].split(','))
    return pairs, diffs


def all_pairs():
    return [(folder, *pair) for folder in FOLDERS for pair in readme(folder)[0]]


# ----------------------------------------------------------------------------- configs
def read_config(path: str) -> Config:
    """A merged config: ``mmdet::``/``mmseg::`` paths from the installed packages, others from
    this repository."""
    if '::' in path:
        from mmengine.hub import get_config
        return get_config(path)
    return Config.fromfile(osp.join(ROOT, path))


@lru_cache(None)
def load(path: str) -> dict:
    """:func:`read_config` as a plain dict (each path read once)."""
    return read_config(path).to_dict()


def _norm(v):
    """Lists and tuples compare alike; mmengine's ``_scope_`` marks (added to what a file outside
    a package inherits from ``mmdet::``) are the default scope both configs already name."""
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items() if k != '_scope_'}
    if isinstance(v, (list, tuple)):
        return tuple(_norm(x) for x in v)
    return v


def walk(ours, theirs, path: str, out: Dict[str, tuple]):
    """Every differing leaf (or subtree present on one side only) as ``path -> (ours, theirs)``."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for k in sorted(set(ours) | set(theirs), key=str):
            p = f'{path}.{k}' if path else str(k)
            walk(ours.get(k, MISSING), theirs.get(k, MISSING), p, out)
    elif isinstance(ours, tuple) and isinstance(theirs, tuple) and len(ours) == len(theirs):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            walk(a, b, f'{path}[{i}]', out)
    elif ours != theirs:
        out[path] = (ours, theirs)


# ----------------------------------------------------------------------------- backbones
@lru_cache(None)
def _class(type_name: str, scope: str):
    """The backbone class a config names (imports mmdet's/mmseg's models), or None if no
    installed registry knows it (the detectron2 twin's ViT)."""
    import importlib
    if '.' in type_name:
        scope, type_name = type_name.split('.', 1)
    try:
        registry = importlib.import_module(f'{scope}.registry').MODELS
    except ImportError:
        return None
    return registry.get(type_name)


def _with_defaults(bb: dict, scope: str) -> dict:
    cls = _class(bb['type'], scope)
    out = {}
    if cls is not None:
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if p.default is not inspect.Parameter.empty:
                out[name] = p.default
        # mmvtx's ViT: None defaults standing for these (mmseg's config has its own)
        out.update(getattr(cls, 'call_defaults', {}))
    out.update({k: v for k, v in bb.items() if k != '_scope_'})
    return out


def _mmvtx_arch(cls_name: str, b: dict) -> dict:
    from mmvtx.models.backbones import CvT, SwinTransformer, ViT
    cls = dict(SwinTransformer=SwinTransformer, ViT=ViT, CvT=CvT)[cls_name]
    arch = cls.resolve_arch(str(b['arch']))
    return {k: (b[k] if b.get(k) is not None else v) for k, v in arch.items()}


def _pretrained(model: dict, bb: dict) -> bool:
    init = bb.get('init_cfg') or {}
    inits = init if isinstance(init, (list, tuple)) else [init]
    return bool(model.get('pretrained') or bb.get('pretrained') or
                any(isinstance(c, dict) and c.get('type') == 'Pretrained' for c in inits))


# the options every mmvtx backbone has, with the same meaning in all three
COMMON_OPTIONS = ('pretrained', 'drop_path_rate', 'out_indices', 'frozen_stages', 'with_cp',
                  'norm_eval')
FAMILIES = {'mmvtx.SwinTransformer': 'swin', 'SwinTransformer': 'swin', 'mmvtx.ViT': 'vit',
            'VisionTransformer': 'vit', 'ViT': 'vit', 'mmvtx.CvT': 'cvt'}


def _family(cfg: dict) -> str:
    return FAMILIES[cfg['model']['backbone']['type']]


def backbone_options(cfg: dict) -> dict:
    """The backbone's training options (and the dimensions that say which preset it is), each
    class's defaults filled in, in one vocabulary (mmvtx's names)."""
    model = cfg['model']
    raw = model['backbone']
    t = raw['type']
    b = _with_defaults(raw, cfg.get('default_scope', 'mmengine'))
    common = dict(pretrained=_pretrained(model, raw))
    if t == 'mmvtx.SwinTransformer':
        return dict(common, **_mmvtx_arch('SwinTransformer', b), **{k: b[k] for k in (
            'window_size', 'patch_size', 'mlp_ratio', 'qkv_bias', 'drop_rate', 'attn_drop_rate',
            'drop_path_rate', 'out_indices', 'frozen_stages', 'with_cp', 'always_shift',
            'norm_eval')})
    if t == 'SwinTransformer':  # mmdet's / mmseg's: every SW-MSA block shifts
        return dict(common, always_shift=True, **{k: b[k] for k in (
            'embed_dims', 'depths', 'num_heads', 'window_size', 'patch_size', 'mlp_ratio',
            'qkv_bias', 'drop_rate', 'attn_drop_rate', 'drop_path_rate', 'out_indices',
            'frozen_stages', 'with_cp')})
    if t == 'mmvtx.ViT':
        from mmvtx.models.backbones import ViT
        arch, opt = ViT.resolve_settings(b['arch'], **{
            k: raw.get(k) for k in ViT.defaults if raw.get(k) is not None})
        b = dict(b, **opt, arch=arch)
        return dict(common, **_mmvtx_arch('ViT', b),
                    pos_embed_grid=b['img_size'] // b['patch_size'], **{k: b[k] for k in (
                        'patch_size', 'mlp_ratio', 'qkv_bias', 'drop_rate', 'attn_drop_rate',
                        'drop_path_rate', 'feature_layers', 'window_size', 'use_rel_pos',
                        'global_attn_indexes', 'with_cls_token', 'final_norm', 'layer_norm_eps',
                        'frozen_stages', 'with_cp', 'norm_eval')})
    if t == 'VisionTransformer':  # mmseg's: out_indices are layer indices
        size = b['img_size'][0] if isinstance(b['img_size'], (list, tuple)) else b['img_size']
        return dict(common, embed_dims=b['embed_dims'], num_layers=b['num_layers'],
                    num_heads=b['num_heads'], feature_layers=b['out_indices'], window_size=0,
                    global_attn_indexes=(), use_rel_pos=False,
                    layer_norm_eps=b['norm_cfg'].get('eps', 1e-5), frozen_stages=-1,
                    pos_embed_grid=size // b['patch_size'], **{k: b[k] for k in (
                        'patch_size', 'mlp_ratio', 'qkv_bias', 'drop_rate', 'attn_drop_rate',
                        'drop_path_rate', 'with_cls_token', 'final_norm', 'with_cp',
                        'norm_eval')})
    if t == 'ViT' and 'window_block_indexes' in b:  # detectron2's ViTDet (the twin file)
        return dict(common, embed_dims=b['embed_dim'], num_layers=b['depth'],
                    num_heads=b['num_heads'], patch_size=b['patch_size'],
                    mlp_ratio=b['mlp_ratio'], qkv_bias=b['qkv_bias'], drop_rate=0.0,
                    attn_drop_rate=0.0, drop_path_rate=b['drop_path_rate'],
                    feature_layers=None, window_size=b['window_size'],
                    global_attn_indexes=tuple(i for i in range(b['depth'])
                                              if i not in b['window_block_indexes']),
                    with_cls_token=False, final_norm=False,  # d2's ViT: neither
                    layer_norm_eps=b['norm_cfg']['eps'], use_rel_pos=b['use_rel_pos'],
                    pos_embed_grid=b['pretrain_img_size'] // b['patch_size'],
                    frozen_stages=-1, with_cp=False)
    if t == 'mmvtx.CvT':
        return dict(common, **{k: b[k] for k in (
            'drop_path_rate', 'out_indices', 'frozen_stages', 'with_cp', 'norm_eval')})
    raise AssertionError(f'no option mapping for backbone type {t!r}')


# ----------------------------------------------------------------------------- comparison
def differences(ours_path: str, twin_path: str) -> Dict[str, tuple]:
    ours, twin = load(ours_path), load(twin_path)
    out: Dict[str, tuple] = {}
    for key in RUNNER_KEYS:
        a, b = _norm(ours.get(key, MISSING)), _norm(twin.get(key, MISSING))
        if key == 'model':
            a = {k: v for k, v in a.items() if k != 'backbone'}
            b = {k: v for k, v in b.items() if k != 'backbone'}
        walk(a, b, key, out)
    a, b = _norm(backbone_options(ours)), _norm(backbone_options(twin))
    keys = set(a) & set(b)
    if _family(ours) != _family(twin):  # CvT or ViT against Swin: the options all three share
        keys &= set(COMMON_OPTIONS)
    for k in sorted(keys):
        walk(a[k], b[k], f'model.backbone.{k}', out)
    return out


def _covers(row_path: str, path: str) -> bool:
    return path == row_path or path.startswith((row_path + '.', row_path + '['))


def _applies(patterns: List[str], name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


PAIRS = all_pairs()


@pytest.mark.parametrize('folder, ours, twin, layout, twin_layout', PAIRS,
                         ids=[p[1] for p in PAIRS])
def test_recipe_matches_its_twin(folder, ours, twin, layout, twin_layout):
    diffs = differences(f'configs/{folder}/{ours}', twin)
    rows = [r for r in readme(folder)[1] if _applies(r[1], ours)]
    unlisted = [f'{p}: ours {a!r} vs twin {b!r}' for p, (a, b) in diffs.items()
                if not any(_covers(r[0], p) for r in rows)]
    stale = [r[0] for r in rows if not any(_covers(r[0], p) for p in diffs)]
    assert not unlisted, (f'{ours} differs from {twin} where configs/{folder}/README.md lists '
                          'no difference:\n  ' + '\n  '.join(unlisted))
    assert not stale, (f'configs/{folder}/README.md lists differences of {ours} from {twin} '
                       f'that are not there (any more): {stale}')


@pytest.mark.parametrize('folder, ours, twin, layout, twin_layout', PAIRS,
                         ids=[p[1] for p in PAIRS])
def test_images_a_step_match_the_twin(folder, ours, twin, layout, twin_layout):
    """GPUs x images a GPU, as the README states them for both, give the same images a step;
    each agrees with its config's batch size and with the ``NxbM`` its file name states."""
    assert layout[0] * layout[1] == twin_layout[0] * twin_layout[1], (ours, layout, twin_layout)
    for path, (gpus, images) in ((f'configs/{folder}/{ours}', layout), (twin, twin_layout)):
        cfg = load(path)
        assert cfg['train_dataloader']['batch_size'] == images, (path, images)
        named = re.search(r'[_-](\d+)xb(\d+)[-_]', osp.basename(path))
        if named:
            assert (int(named[1]), int(named[2])) == (gpus, images), (path, named[0])
        base = (cfg.get('auto_scale_lr') or {}).get('base_batch_size')
        if base is not None:
            assert base == gpus * images, (path, base, gpus, images)


RECIPES = [p for p in PAIRS if not re.search(r'_shapes(-[\dx]+)?\.py$', p[1])]


@pytest.mark.parametrize('folder, ours, twin, layout, twin_layout', RECIPES,
                         ids=[p[1] for p in RECIPES])
def test_auto_scale_lr_takes_every_recipe(folder, ours, twin, layout, twin_layout, tmp_path):
    """The README's way to train a COCO/ADE20K recipe on fewer GPUs, ``--auto-scale-lr``, works
    for each of them (the UPerNet recipes had no ``auto_scale_lr``: the flag was refused), and
    scales from the total batch the recipe's lr is for (its GPUs x images)."""
    from mmvtx.engine.runner import prepare_train_cfg
    path = osp.join(ROOT, 'configs', folder, ours)
    cfg = prepare_train_cfg(read_config(path), path, work_dir=str(tmp_path), auto_scale_lr=True)
    assert cfg.auto_scale_lr.enable is True
    assert cfg.auto_scale_lr.base_batch_size == layout[0] * layout[1], (ours, layout)


def test_every_recipe_has_a_twin_and_every_row_a_recipe():
    """Each COCO/ADE20K recipe of the three folders is in its README's pairs table (the shapes
    configs are CPU demos), and each difference row applies to at least one pair."""
    import glob
    for folder in FOLDERS:
        pairs, rows = readme(folder)
        listed = {p[0] for p in pairs}
        files = {osp.basename(p) for p in glob.glob(osp.join(ROOT, 'configs', folder, '*.py'))}
        recipes = {f for f in files if not re.search(r'_shapes(-[\dx]+)?\.py$', f)}
        assert recipes <= listed, f'configs/{folder}: no twin listed for {recipes - listed}'
        assert listed <= files, f'configs/{folder}/README.md pairs name no file: {listed - files}'
        for path, patterns, _ in rows:
            assert any(_applies(patterns, p[0]) for p in pairs), \
                f'configs/{folder}/README.md: {path} applies to no recipe ({patterns})'


def test_a_drifted_recipe_fails(tmp_path):
    """The check itself: a recipe that changes a head loss, the schedule or a backbone option
    is reported with the path of each change."""
    ours = 'configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
    drifted = tmp_path / 'drifted.py'
    drifted.write_text(
        f"_base_ = '{osp.join(ROOT, ours)}'\n"
        "model = dict(backbone=dict(drop_path_rate=0.1),\n"
        "             roi_head=dict(bbox_head=dict(loss_bbox=dict(type='SmoothL1Loss'))))\n"
        "param_scheduler = [dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,\n"
        "                        end=500)]\n")
    diffs = differences(str(drifted), 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    assert diffs['model.roi_head.bbox_head.loss_bbox.type'] == ('SmoothL1Loss', 'L1Loss')
    assert diffs['model.backbone.drop_path_rate'] == (0.1, 0.2)
    assert diffs['param_scheduler'][0] != diffs['param_scheduler'][1]  # one scheduler vs two
    rows = [r for r in readme('swin')[1] if _applies(r[1], ours)]
    assert not any(_covers(r[0], 'model.roi_head.bbox_head.loss_bbox.type') for r in rows)
