"""tools/test.py and tools/demo.py evaluate a checkpoint only if it fits the config's model:
mmengine loads ``load_from`` with strict=False, so another model's file (or a backbone-only
file) was evaluated with most weights at their random init, and metrics came out with exit
status 0. And where their outputs go."""
import glob
import os.path as osp
import sys
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmvtx.engine import CheckpointFitHook
from mmvtx.utils.checkpoint import CheckpointMismatchError
from tests.engine.test_train_tools import shapes_data  # noqa: F401  (the data, once)
from tests.engine.test_train_tools import (DET_CFG, DET_CFGS, ROOT, SEG_CFG, SMALL_BACKBONES,
                                           run_tool, small_config)


def _detector(arch: str, **backbone):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    cfg = Config.fromfile(DET_CFGS[arch])
    small, widths = SMALL_BACKBONES[arch]
    cfg.model.backbone.update(small, **backbone)
    cfg.model.neck.in_channels = widths
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg.model)


def _check(model, state_dict, path='some.pth'):
    runner = SimpleNamespace(model=model, _load_from=path)
    CheckpointFitHook().after_load_checkpoint(runner, {'state_dict': state_dict, 'meta': {}})


@pytest.mark.parametrize('arch,setting', [('swin', 'backbone.shift_rule'),
                                          ('cvt', 'backbone.mlp_act'),
                                          ('vit', 'backbone.mlp_act')])
def test_the_models_own_checkpoint_fits(arch, setting):
    """Its own weights fit, with DataParallel's ``module.`` prefix too, and so do checkpoints
    written before the settings' int8 buffers existed (the setting stays as built)."""
    model = _detector(arch)
    own = model.state_dict()
    assert setting in own
    _check(model, own)
    _check(model, {'module.' + k: v for k, v in own.items()})
    _check(model, {k: v for k, v in own.items() if k != setting})


def test_another_models_checkpoint_is_refused_naming_the_keys():
    swin = _detector('swin')
    sd = swin.state_dict()
    with pytest.raises(CheckpointMismatchError) as e:  # a ViT detector's file
        _check(_detector('vit'), sd, 'work_dirs/demo_swin/iter_700.pth')
    msg = str(e.value)
    assert 'work_dirs/demo_swin/iter_700.pth does not fit the MaskRCNN' in msg
    assert 'missing keys' in msg and 'unexpected keys' in msg and 'backbone.shift_rule' in msg

    with pytest.raises(CheckpointMismatchError, match='shape mismatches') as e:  # other widths
        _check(_detector('swin', embed_dims=48), sd)
    assert 'backbone.patch_embed.proj.weight: checkpoint (24, 3, 4, 4) vs model ' \
           '(48, 3, 4, 4)' in str(e.value)

    backbone_only = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    with pytest.raises(CheckpointMismatchError) as e:
        _check(swin, backbone_only)  # mmengine loaded 0 tensors from it and evaluated
    assert f'missing keys ({len(sd) - 1}): backbone.' in str(e.value)  # all but shift_rule
    assert f'unexpected keys ({len(backbone_only)}): shift_rule, patch_embed.proj.weight' in \
        str(e.value)
    with pytest.raises(CheckpointMismatchError, match=r'missing keys \(1\): backbone.norm0'):
        _check(swin, {k: v for k, v in sd.items() if not k.startswith('backbone.norm0.')}
               | {'backbone.norm0.bias': sd['backbone.norm0.bias']})


def test_fine_tuning_refuses_a_load_from_of_which_nothing_fits(tmp_path):
    """``tools/train.py`` with ``load_from`` of a backbone's file (a converter's output, keys
    without ``backbone.``): mmengine loaded 0 tensors with strict=False, logged a warning and
    trained from the initial weights, exit status 0. Fine-tuning from another model's file
    still loads what fits (other classes, another backbone under the same neck)."""
    from mmvtx.engine.runner import prepare_train_cfg
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper'), load_from='detector.pth'))
    prepare_train_cfg(cfg, 'x.py', work_dir=str(tmp_path))
    assert dict(type='mmvtx.CheckpointFitHook', action='fine-tuned') in cfg.custom_hooks
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper')))
    prepare_train_cfg(cfg, 'x.py', work_dir=str(tmp_path))
    assert 'CheckpointFitHook' not in str(cfg.custom_hooks)

    swin = _detector('swin')
    sd = swin.state_dict()

    def fine_tune(model, state_dict):
        runner = SimpleNamespace(model=model, _load_from='some.pth')
        CheckpointFitHook('fine-tuned').after_load_checkpoint(
            runner, {'state_dict': state_dict, 'meta': {}})

    backbone_only = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    with pytest.raises(CheckpointMismatchError) as e:
        fine_tune(swin, backbone_only)
    msg = str(e.value)
    assert 'some.pth does not fit the MaskRCNN' in msg and 'it is not fine-tuned' in msg
    assert 'None of its tensors fits the model' in msg and 'model.backbone.init_cfg' in msg
    from mmvtx.engine import checkpoint_fit
    logged = []
    log = checkpoint_fit.print_log
    checkpoint_fit.print_log = lambda msg, **kw: logged.append(msg)
    try:
        fine_tune(swin, sd)
        assert not [m for m in logged if 'none of its tensors' in m]
        fine_tune(_detector('vit'), sd)  # the heads fit: loaded, the backbone stays as it is
    finally:
        checkpoint_fit.print_log = log
    # ... and the log says so (mmengine's list of missing keys alone had buried it)
    assert [m for m in logged if 'none of its tensors fits model.backbone (ViT): the backbone '
            'keeps its initial weights' in m], logged
    other_classes = {k: v for k, v in sd.items() if 'fc_cls' not in k}
    fine_tune(swin, other_classes)


def test_tools_test_refuses_a_backbone_checkpoint(tmp_path):
    cfg = small_config(tmp_path, DET_CFG, 'det', iters=1, ckpt_interval=1)
    ckpt = tmp_path / 'backbone.pth'
    sd = _detector('swin').state_dict()
    torch.save({k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')},
               ckpt)
    out = run_tool([sys.executable, osp.join(ROOT, 'tools/test.py'), cfg, str(ckpt),
                    '--work-dir', str(tmp_path / 'test')], cwd=str(tmp_path))
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert f'error: {ckpt} does not fit the MaskRCNN' in out.stderr
    assert 'coco/bbox_mAP' not in out.stdout + out.stderr


def _load_demo():
    import importlib.util
    spec = importlib.util.spec_from_file_location('mmvtx_demo', osp.join(ROOT, 'tools/demo.py'))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def test_demo_names_its_work_dir_after_the_config(tmp_path, monkeypatch):
    """``--config X`` took the Swin demo's work dir (and evaluated its checkpoint) and outputs;
    relative paths were read from the repository instead of the current directory."""
    demo = _load_demo()
    monkeypatch.chdir(tmp_path)
    args = demo.parse_args(['--config', 'cfgs/my_det.py', '--work-dir', 'runs/a'])
    assert args.config == str(tmp_path / 'cfgs/my_det.py')
    assert args.work_dir == str(tmp_path / 'runs/a')
    assert args.out_dir == osp.join(ROOT, 'outputs', 'demo_my_det')
    args = demo.parse_args(['--config', 'cfgs/my_det.py'])
    assert args.work_dir == osp.join(ROOT, 'work_dirs', 'demo_my_det')
    args = demo.parse_args(['--model', 'vit'])
    assert args.config == osp.join(ROOT, demo.CONFIGS['vit'])
    assert args.work_dir == osp.join(ROOT, 'work_dirs', 'demo_vit')
    assert args.out_dir == osp.join(ROOT, 'outputs', 'demo_vit')


def test_demo_refuses_a_negative_number_of_images(capsys):
    """``--num-images -1`` drew every val image but the last (``images[:-1]``: 99 drawings)."""
    demo = _load_demo()
    assert demo.parse_args(['--num-images', '0']).num_images == 0
    with pytest.raises(SystemExit):
        demo.parse_args(['--num-images', '-1'])
    assert '--num-images must be >= 0, got -1' in capsys.readouterr().err


def test_demo_refuses_to_evaluate_another_models_checkpoint(tmp_path):
    """A finished run's checkpoint is evaluated only if it fits the config's model."""
    cfg = small_config(tmp_path, DET_CFG, 'det', iters=1, ckpt_interval=1)
    sd = _detector('vit').state_dict()
    (tmp_path / 'work').mkdir()
    torch.save({'state_dict': sd, 'meta': {}}, tmp_path / 'work' / 'iter_1.pth')
    out = run_tool([sys.executable, osp.join(ROOT, 'tools/demo.py'), '--config',
                    osp.basename(cfg), '--work-dir', 'work'], cwd=str(tmp_path))
    assert out.returncode != 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f'{tmp_path / "work" / "iter_1.pth"} does not fit the MaskRCNN' in out.stderr
    assert 'bbox mAP' not in out.stdout


class _Built(Exception):
    """Raised by the stand-in Runner once the demo has built its config."""


def _demo_stopped_before_running(monkeypatch):
    """The demo module with a Runner that records the config it would run and stops there:
    ``(demo, configs built so far, the exception it stops with)``."""
    demo = _load_demo()
    built = []

    class Runner:
        @staticmethod
        def from_cfg(cfg):
            built.append(cfg)
            raise _Built

    monkeypatch.setattr(demo, 'Runner', Runner)
    return demo, built, _Built


def test_demo_resumes_a_retrain_interrupted_after_a_finished_run(tmp_path, monkeypatch):
    """After a finished run (iter_700.pth) and a ``--retrain`` interrupted at iter_200.pth,
    running the demo again ("Interrupted? Run it again: it resumes") evaluated the earlier
    run's iter_700.pth and printed its metrics as if they were the new run's."""
    demo, built, Built = _demo_stopped_before_running(monkeypatch)
    monkeypatch.chdir(tmp_path)  # the demo changes directory; put back after the test
    work = tmp_path / 'work'
    work.mkdir()
    for step in (700, 200):
        torch.save({'meta': {}}, work / f'iter_{step}.pth')

    def run(pointer, *flags):
        (work / 'last_checkpoint').write_text(str(work / pointer))
        with pytest.raises(Built):
            demo.main(['--work-dir', str(work), *flags])
        return built[-1]

    cfg = run('iter_200.pth')  # the retrain's newest checkpoint: resumed
    assert cfg.resume is True and cfg.load_from == str(work / 'iter_200.pth')
    cfg = run('iter_700.pth')  # the finished run: evaluated
    assert not cfg.get('resume') and cfg.load_from == str(work / 'iter_700.pth')
    assert 'CheckpointFitHook' in str(cfg.custom_hooks)
    cfg = run('iter_200.pth', '--retrain')  # from the start
    assert not cfg.get('resume') and cfg.get('load_from') is None
    # a config with `resume = True` (as OpenMMLab configs often have): --retrain resumed it
    config = tmp_path / 'resume_true.py'
    config.write_text(f'_base_ = {osp.join(ROOT, demo.CONFIGS["swin"])!r}\nresume = True\n')
    cfg = run('iter_200.pth', '--retrain', '--config', str(config))
    assert not cfg.get('resume') and cfg.get('load_from') is None
    cfg = run('iter_700.pth', '--config', str(config))  # evaluated, not resumed
    assert not cfg.get('resume') and cfg.load_from == str(work / 'iter_700.pth')


def test_demo_takes_an_epoch_based_config(tmp_path, monkeypatch):
    """``--config`` of an epoch-based detection config (mmdet's own schedules, as the
    downstream project's shapes config) stopped with ``AttributeError: 'ConfigDict' object has
    no attribute 'max_iters'`` before training; its finished run ends with epoch_N.pth."""
    demo, built, Built = _demo_stopped_before_running(monkeypatch)
    monkeypatch.chdir(tmp_path)
    config = osp.join(ROOT, 'projects/downstream_backbone_swap/configs/'
                      'mask-rcnn_mmvtx-swin_fpn_shapes.py')
    assert Config.fromfile(config).train_cfg.max_epochs == 2
    work = tmp_path / 'work'

    def run():
        with pytest.raises(Built):
            demo.main(['--config', config, '--work-dir', str(work)])
        return built[-1]

    cfg = run()  # nothing trained yet: from the start
    assert not cfg.get('resume') and cfg.get('load_from') is None
    work.mkdir(exist_ok=True)  # (made by the first run: it holds the work dir's lock)
    torch.save({'meta': {}}, work / 'epoch_1.pth')
    cfg = run()  # interrupted after the first epoch: resumed
    assert cfg.resume is True and cfg.load_from == str(work / 'epoch_1.pth')
    torch.save({'meta': {}}, work / 'epoch_2.pth')
    cfg = run()  # finished: evaluated
    assert not cfg.get('resume') and cfg.load_from == str(work / 'epoch_2.pth')


def test_demo_refuses_a_segmentation_config_before_training(tmp_path, monkeypatch):
    """``--config`` of a shapes UPerNet config trained it for its 1000 iterations, then failed
    drawing (``KeyError: 'DetLocalVisualizer is not in the mmseg::visualizer registry'``)."""
    demo = _load_demo()
    built = []
    monkeypatch.setattr(demo, 'Runner', SimpleNamespace(from_cfg=built.append))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=f'error: {SEG_CFG} is an mmseg config; the demo '
                       'trains, evaluates and draws a detector'):
        demo.main(['--config', SEG_CFG, '--work-dir', str(tmp_path / 'work')])
    assert not built and not (tmp_path / 'work').exists()


def test_demo_refuses_a_config_of_another_dataset_before_writing_shapes_there(tmp_path,
                                                                           monkeypatch):
    """``--config`` of a COCO recipe generated the shapes scenes into its ``data/coco/`` (a
    folder meant for the real COCO), then failed on the missing
    ``instances_train2017.json``."""
    demo = _load_demo()
    built = []
    monkeypatch.setattr(demo, 'Runner', SimpleNamespace(from_cfg=built.append))
    monkeypatch.setattr(demo, 'ROOT', str(tmp_path))  # where the demo runs and writes data
    monkeypatch.chdir(tmp_path)  # the demo changes directory; put back after the test
    config = osp.join(ROOT, 'configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    with pytest.raises(SystemExit, match=f'error: {config} trains on CocoDataset '
                       r'\(data/coco/\), not the shapes scenes'):
        demo.main(['--config', config, '--work-dir', str(tmp_path / 'work')])
    assert not built and not (tmp_path / 'data').exists()
    assert not (tmp_path / 'work').exists()


def test_demo_draws_from_a_data_root_with_brackets_in_its_name(tmp_path, monkeypatch):
    """The val images were found with ``glob`` on the data root unescaped: a root such as
    ``data/shapes [v2]`` matched no file, and the demo ended with "predictions drawn: none"."""
    import mmvtx.datasets.shapes as shapes
    from mmvtx.datasets import prepare_shapes
    monkeypatch.setattr(shapes, 'SPLITS', {'train': (1, 0), 'val': (2, 1)})
    root = prepare_shapes(str(tmp_path / 'shapes [v2]')) + '/'
    cfg = Config.fromfile(DET_CFG)
    cfg.val_dataloader.dataset.data_root = root
    model = _detector('swin').eval()
    with DefaultScope.overwrite_default_scope('mmdet'):
        files = _load_demo().draw_predictions(model, cfg, str(tmp_path / 'out'), num=6)
    assert [osp.basename(f) for f in files] == ['pred_000000.png', 'pred_000001.png',
                                                 'predictions.png']


def test_demo_grid_keeps_the_aspect_ratio_of_the_drawings(tmp_path, monkeypatch):
    """predictions.png stretched every drawing to 320 x 256: a 256 x 256 scene's squares
    showed as rectangles and its circles as ellipses. Each drawing now sits unscaled on its
    tile; a larger one is shrunk to fit, keeping its aspect ratio."""
    import cv2
    import numpy as np
    import mmvtx.datasets.shapes as shapes
    from mmvtx.datasets import prepare_shapes
    monkeypatch.setattr(shapes, 'SPLITS', {'train': (1, 0), 'val': (2, 1)})
    root = prepare_shapes(str(tmp_path / 'shapes'))
    path = osp.join(root, 'images', 'val', '000001.png')
    cv2.imwrite(path, cv2.resize(cv2.imread(path), (640, 640)))
    cfg = Config.fromfile(DET_CFG)
    cfg.val_dataloader.dataset.data_root = root + '/'
    with DefaultScope.overwrite_default_scope('mmdet'):
        files = _load_demo().draw_predictions(_detector('swin').eval(), cfg,
                                              str(tmp_path / 'out'), num=2)
    grid = cv2.imread(files[-1])
    assert grid.shape == (256, 3 * 320, 3)
    drawn = cv2.imread(files[0])
    h, w = drawn.shape[:2]
    assert (h, w) != (256, 320)  # a scene that does not fill the tile: not stretched to it
    tile = grid[:, :320]
    assert np.array_equal(tile[:h, :w], drawn) and not tile[h:].any() and not tile[:, w:].any()
    assert cv2.imread(files[1]).shape[:2] == (640, 640)
    tile = grid[:, 320:640]  # shrunk to 256 x 256
    assert not tile[:, 256:].any() and tile[:, 255].any()


def test_tools_test_draws_segmentation_under_the_work_dir(tmp_path):
    """``--show-dir vis`` put mmseg's drawings in ./vis of the current directory; they go to
    <work_dir>/<timestamp>/vis, one file per image, as mmdet's do."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    cfg = small_config(tmp_path, SEG_CFG, 'seg', iters=1, ckpt_interval=1)
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(Config.fromfile(cfg).model)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, tmp_path / 'seg.pth')
    (tmp_path / 'cwd').mkdir()
    out = run_tool([sys.executable, osp.join(ROOT, 'tools/test.py'), cfg,
                    str(tmp_path / 'seg.pth'), '--work-dir', str(tmp_path / 'test'),
                    '--show-dir', 'vis'], cwd=str(tmp_path / 'cwd'))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'mIoU' in out.stdout + out.stderr
    drawn = sorted(osp.basename(p) for p in glob.glob(str(tmp_path / 'test' / '*' / 'vis' / '*')))
    assert drawn == [f'{i:06d}.png' for i in range(8)]
    assert not list((tmp_path / 'cwd').iterdir())


def test_tools_test_out_folder_feeds_mmsegs_confusion_matrix(tmp_path):
    """mmseg's ``tools/test.py CONFIG CKPT --out DIR`` writes the predicted label maps there as
    PNG files, which mmseg's ``analysis_tools/confusion_matrix.py CONFIG DIR SAVE_DIR`` reads;
    ours refused any name but a .pkl. A .pkl still gets the raw predictions."""
    import numpy as np
    from PIL import Image
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    cfg = small_config(tmp_path, SEG_CFG, 'seg', iters=1, ckpt_interval=1)
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(Config.fromfile(cfg).model)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, tmp_path / 'seg.pth')
    out = run_tool([sys.executable, osp.join(ROOT, 'tools/test.py'), cfg,
                    str(tmp_path / 'seg.pth'), '--work-dir', str(tmp_path / 'test'),
                    '--out', 'preds'], cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'mIoU' in out.stdout + out.stderr
    maps = sorted(glob.glob(str(tmp_path / 'preds' / '*.png')))
    assert len(maps) == 8
    assert np.asarray(Image.open(maps[0])).max() < 4  # class indices of the 4 shapes classes
    tool = osp.join(osp.dirname(__import__('mmseg').__file__), '.mim', 'tools',
                    'analysis_tools', 'confusion_matrix.py')
    cm = run_tool([sys.executable, tool, cfg, 'preds', 'cm'], cwd=str(tmp_path),
                  env_extra=dict(MPLBACKEND='Agg'))
    assert cm.returncode == 0, cm.stdout[-3000:] + cm.stderr[-3000:]
    assert (tmp_path / 'cm' / 'confusion_matrix.png').exists()

    from mmvtx.engine.runner import prepare_test_out
    pkl = prepare_test_out(Config.fromfile(cfg), 'p.pkl')  # the raw predictions, as before
    assert pkl.test_evaluator[-1] == dict(type='DumpResults', out_file_path='p.pkl')
    with pytest.raises(ValueError, match='must end with .pkl'):  # mmdet's --out: a pickle
        prepare_test_out(Config.fromfile(DET_CFG), 'preds')


def test_tta_wraps_the_model_and_replaces_the_test_pipeline(shapes_data,  # noqa: F811
                                                              tmp_path):
    """``tools/test.py --tta`` (mmdet's and mmseg's flag) was refused as an unknown argument."""

    from mmvtx.engine.runner import prepare_test_cfg
    ckpt = str(tmp_path / 'x.pth')  # the file to test is there (a missing one is refused)
    torch.save({}, ckpt)
    ade = Config.fromfile(osp.join(ROOT, 'configs/swin/upernet_swin-t-p4-w7_4xb4-160k_'
                                   'ade20k-512x512.py'))
    prepare_test_cfg(ade, 'upernet.py', ckpt, tta=True)
    assert ade.model.type == 'SegTTAModel' and ade.model.module.type == 'EncoderDecoder'
    assert ade.test_dataloader.dataset.pipeline == ade.tta_pipeline
    with pytest.raises(ValueError, match='--out preds.json: a .pkl'):  # refused before loading
        prepare_test_cfg(Config.fromfile(SEG_CFG), SEG_CFG, ckpt, out='preds.json')
    with pytest.raises(ValueError, match='--tta needs tta_pipeline'):  # the shapes config
        prepare_test_cfg(Config.fromfile(SEG_CFG), SEG_CFG, ckpt, tta=True)
    with pytest.raises(ValueError, match='MaskRCNN predicts masks'):  # mmdet's TTA: boxes
        prepare_test_cfg(Config.fromfile(DET_CFG), DET_CFG, ckpt, tta=True)

    det = Config.fromfile(DET_CFG)  # a box-only detector gets mmdet's default flip TTA
    det.model.roi_head.update(mask_roi_extractor=None, mask_head=None)
    prepare_test_cfg(det, DET_CFG, ckpt, tta=True)
    assert det.model.type == 'DetTTAModel' and det.model.module.type == 'MaskRCNN'
    from mmdet.registry import DATASETS
    data_cfg = dict(det.test_dataloader.dataset, indices=1)
    data_cfg['data_root'] = osp.join(ROOT, data_cfg['data_root'])
    with DefaultScope.overwrite_default_scope('mmdet'):  # not left set for the next test
        item = DATASETS.build(data_cfg)[0]
    assert [s.flip for s in item['data_samples']] == [True, False]

    # the fit check looks inside the TTA wrapper, as mmengine's loading does
    from mmseg.models import SegTTAModel
    model = SegTTAModel(module=_detector('swin'))
    _check(model, model.module.state_dict())
    with pytest.raises(CheckpointMismatchError):
        _check(model, {k: v for k, v in model.module.state_dict().items()
                       if 'rpn_head' not in k})


def test_tools_test_refuses_a_dataset_of_other_classes_than_the_checkpoints():
    """A user's detector trained with ``metainfo=dict(classes=('cat', 'dog', 'bird'))`` on the
    training set only, tested with the test set left at CocoDataset's 80 classes: mmdet's
    CocoMetric scored label 0 ('cat') as 'person', and so on, and reported the wrong mAP with
    exit status 0. The classes the checkpoint's meta records (mmengine saves the training
    dataset's) are compared with the evaluated dataset's before anything is evaluated."""
    from mmdet.datasets import CocoDataset
    from mmengine.runner import BaseLoop

    class Loop(BaseLoop):
        def run(self):
            pass

    swin = _detector('swin')  # 3 classes, as the shapes data
    sd = swin.state_dict()

    def evaluate(classes, meta):
        dataset = SimpleNamespace(metainfo=dict(classes=classes))
        runner = SimpleNamespace(model=swin, _load_from='mine.pth', _val_loop=None)
        runner._test_loop = Loop(runner, SimpleNamespace(dataset=dataset))
        CheckpointFitHook().after_load_checkpoint(runner, {'state_dict': sd, 'meta': meta})

    learnt = {'dataset_meta': {'classes': ('cat', 'dog', 'bird')}}
    with pytest.raises(CheckpointMismatchError) as e:
        evaluate(CocoDataset.METAINFO['classes'], learnt)
    msg = str(e.value)
    assert "has 80 classes ('person', 'bicycle'" in msg
    assert "but the model learnt 3 classes ('cat', 'dog', 'bird') (mine.pth's meta)" in msg
    assert "first differ at label 0: 'cat' vs 'person'" in msg and 'not evaluated' in msg
    with pytest.raises(CheckpointMismatchError, match="label 1: 'dog' vs 'bird'"):  # the order
        evaluate(('cat', 'bird', 'dog'), learnt)
    evaluate(('cat', 'dog', 'bird'), learnt)  # the same classes
    evaluate(CocoDataset.METAINFO['classes'], {})  # a file that records none (a release)
    with pytest.raises(CheckpointMismatchError, match=r'has 2 classes .* learnt 3 classes'):
        evaluate(('a', 'b'), {'CLASSES': ('a', 'b', 'c')})  # mmdet 2.x / mmseg 0.x meta


def test_tta_of_a_wrapped_test_dataset_goes_to_the_datasets_it_wraps(tmp_path):
    """``--tta`` with a test set in a wrapper (``RepeatDataset``, ``ConcatDataset`` of two
    val sets): the TTA pipeline was set on the wrapper, which takes none (TypeError: unexpected
    keyword argument 'pipeline', as mmseg's tools/test.py does); it goes to every dataset the
    wrapper holds, and the wrapped test set gives each image's augmented views."""
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    from mmvtx.engine.runner import prepare_test_cfg
    ckpt = str(tmp_path / 'x.pth')
    torch.save({}, ckpt)
    cfg = Config.fromfile(SEG_CFG)
    cfg.tta_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='TestTimeAug', transforms=[
            [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.5, 1.0)],
            [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])]
    data = dict(cfg.test_dataloader.dataset, data_root=osp.join(ROOT, 'data', 'shapes'),
                indices=1)
    cfg.test_dataloader.dataset = dict(type='ConcatDataset', datasets=[
        dict(type='RepeatDataset', times=1, dataset=data), data])
    prepare_test_cfg(cfg, SEG_CFG, ckpt, tta=True)
    wrapped = cfg.test_dataloader.dataset
    assert 'pipeline' not in wrapped and 'pipeline' not in wrapped.datasets[0]
    assert wrapped.datasets[0].dataset.pipeline == wrapped.datasets[1].pipeline == \
        cfg.tta_pipeline
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(wrapped)
    assert len(dataset) == 2
    views = dataset[1]['data_samples']
    assert [s.img_shape for s in views] == [tuple(round(x / 2) for x in views[1].img_shape),
                                            views[1].img_shape]


@pytest.mark.parametrize('kind', ['det', 'seg'])
def test_show_dir_draws_the_images_of_every_process(tmp_path, monkeypatch, kind):
    """``tools/dist_test.sh CONFIG CKPT 2 --show-dir vis`` drew rank 0's images only (the 1st,
    3rd, ... of the test set): mmdet's and mmseg's visualizers draw under ``@master_only``.
    Here as rank 1 of 2 on a 3-image test set, batches of 2: rank 1 gets image 1 and, as
    ``DefaultSampler``'s padding, image 0 again, which is rank 0's to draw."""
    from importlib import import_module

    import cv2
    import mmengine.dist.utils as dist_utils
    import numpy as np
    from mmengine.dataset import DefaultSampler
    from mmengine.structures import InstanceData, PixelData

    from mmvtx.engine.runner import prepare_test_cfg
    cfg = Config.fromfile(DET_CFG if kind == 'det' else SEG_CFG)
    torch.save({'state_dict': {}}, tmp_path / 'm.pth')
    prepare_test_cfg(cfg, 'cfg.py', str(tmp_path / 'm.pth'), work_dir=str(tmp_path),
                     show_dir='vis', launcher='pytorch')
    hook_cfg = dict(cfg.default_hooks.visualization)
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f'{i:06d}.png'))
        cv2.imwrite(paths[-1], np.full((40, 60, 3), 50 * i, np.uint8))

    class Data(list):
        metainfo = dict(classes=('a', 'b'), palette=[(255, 0, 0), (0, 255, 0)])

    if kind == 'det':
        from mmdet.structures import DetDataSample
        from mmdet.visualization import DetLocalVisualizer as Vis
        outputs = [DetDataSample(img_path=p, pred_instances=InstanceData(
            bboxes=torch.tensor([[5., 5., 30., 20.]]), labels=torch.tensor([1]),
            scores=torch.tensor([0.9]))) for p in (paths[1], paths[0])]
    else:
        from mmseg.structures import SegDataSample
        from mmseg.visualization import SegLocalVisualizer as Vis
        outputs = [SegDataSample(img_path=p, pred_sem_seg=PixelData(
            data=torch.ones(1, 40, 60, dtype=torch.long))) for p in (paths[1], paths[0])]
    Vis.get_instance(f'show_dir_{kind}_{tmp_path.name}', vis_backends=[])
    monkeypatch.setattr(dist_utils, 'get_rank', lambda group=None: 1)  # is_main_process: False
    from mmengine.registry import HOOKS
    import_module('mmdet.utils' if kind == 'det' else 'mmseg.utils').register_all_modules(
        init_default_scope=False)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # as the Runner builds it
        hook = HOOKS.build(hook_cfg)
    sampler = DefaultSampler(Data([0, 1, 2]), shuffle=False)
    sampler.rank, sampler.world_size = 1, 2
    runner = SimpleNamespace(work_dir=str(tmp_path), timestamp='ts', iter=0,
                             test_dataloader=SimpleNamespace(sampler=sampler, batch_size=2,
                                                             dataset=sampler.dataset))
    hook.after_test_iter(runner, 0, {}, outputs)
    drawn = sorted(osp.basename(p) for p in glob.glob(str(tmp_path / 'ts' / 'vis' / '*')))
    assert drawn == ['000001.png']  # its own image; not rank 0's repeated one
    img = cv2.imread(str(tmp_path / 'ts' / 'vis' / '000001.png'))
    assert img.shape[0] == 40 and img.shape[1] in (60, 120)  # (mmdet: ground truth | pred)
    assert (img[:, -60:] != 50).any()  # the prediction drawn on image 1
    assert not dist_utils.is_main_process()  # the drawing's stand-in rank 0 was undone
