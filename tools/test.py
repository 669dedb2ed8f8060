"""Evaluate a checkpoint on the config's test set (detection or segmentation alike).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--out PKL|DIR] [--tta]
                         [--cfg-options k=v]

``--out preds.pkl`` dumps the raw predictions (mmdet's ``--out``); with a segmentation config,
``--out DIR`` writes the predicted label maps as PNG files (mmseg's ``--out``, what mmseg's
``tools/analysis_tools/confusion_matrix.py CONFIG DIR SAVE_DIR`` reads).

A checkpoint whose keys or shapes do not fit the config's model (another model's, a backbone's
alone) is refused, naming the keys, instead of being evaluated half loaded
(:class:`mmvtx.engine.CheckpointFitHook`).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmvtx  # noqa: E402,F401
from mmvtx.engine.runner import (CfgOptionError, DataFileError, LauncherError,  # noqa: E402
                                 finish_cpu_distributed, init_cpu_distributed, load_config,
                                 naming_data_errors, parse_tool_args,
                                 prepare_test_cfg, tool_parser)
from mmvtx.utils.checkpoint import (CheckpointMismatchError,  # noqa: E402
                                    CheckpointReadError)


def parse_args(argv=None):
    parser = tool_parser('Test (and evaluate) a model')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump the raw predictions to this .pkl file; for a '
                        'segmentation config a folder (no suffix) gets the predicted label maps '
                        'as PNG files, as mmseg\'s --out')
    parser.add_argument('--show-dir', help='draw the predictions on the images into this dir '
                        '(under the work dir: <work_dir>/<timestamp>/DIR)')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (the config\'s tta_model and tta_pipeline, '
                        'as mmdet\'s and mmseg\'s tools/test.py --tta)')
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args)
    except CfgOptionError as e:  # a --cfg-options entry that is a slip
        sys.exit(f'error: {e}')
    try:
        prepare_test_cfg(cfg, args.config, args.checkpoint, work_dir=args.work_dir,
                         show_dir=args.show_dir, out=args.out, launcher=args.launcher,
                         tta=args.tta)
    # a flag the config cannot take (--tta, --out, --amp, ...), a checkpoint that is no file
    # (missing, a folder, cut off): one line, as argparse refuses a bad flag
    except (ValueError, FileNotFoundError, IsADirectoryError) as e:
        sys.exit(f'error: {e}')
    own_group = init_cpu_distributed(cfg, args.launcher)
    with naming_data_errors(cfg):  # a cut-off annotation file, an empty dataset
        runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
        metrics = runner.test()
    del runner  # DDP and its process group references go before the group closes
    finish_cpu_distributed(own_group)
    return metrics


if __name__ == '__main__':
    try:
        main()
    # a checkpoint of another model, or one that cannot be read, a --launcher pytorch
    # without torchrun: no metrics, one line
    except (CheckpointMismatchError, CheckpointReadError, LauncherError, DataFileError) as e:
        sys.exit(f'error: {e}')
