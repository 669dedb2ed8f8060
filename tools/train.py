"""Train a detector or a segmentor from a config (the config's ``default_scope`` decides).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--compile [BACKEND]]
                                 [--cfg-options k=v]
    bash tools/dist_train.sh CONFIG GPUS [...]          # DDP through torchrun
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmvtx  # noqa: E402,F401  registers models/datasets/hooks
from mmvtx.engine.runner import (CfgOptionError, DataFileError, LauncherError,  # noqa: E402
                                 finish_cpu_distributed, init_cpu_distributed, load_config,
                                 naming_data_errors, parse_tool_args,
                                 prepare_train_cfg, stop_on_sigterm, Stopped,
                                 stopped_message, tool_parser)
from mmvtx.engine.reliability import WorkDirInUseError  # noqa: E402
from mmvtx.utils.checkpoint import (CheckpointMismatchError,  # noqa: E402
                                    CheckpointReadError)


def parse_args(argv=None):
    parser = tool_parser('Train a detector or a segmentor')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual total batch size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the newest complete checkpoint in the '
                        'work dir')
    parser.add_argument('--deterministic', action='store_true',
                        help='deterministic kernels (cuDNN, torch.use_deterministic_algorithms): '
                        'bit-identical GPU runs, slower')
    parser.add_argument('--compile', nargs='?', const='inductor', metavar='BACKEND',
                        help='torch.compile the backbone (default backend: inductor; '
                        'aot_eager traces without code generation)')
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args)
    except CfgOptionError as e:  # a --cfg-options entry that is a slip
        sys.exit(f'error: {e}')
    try:
        prepare_train_cfg(cfg, args.config, work_dir=args.work_dir, amp=args.amp,
                          resume=args.resume, auto_scale_lr=args.auto_scale_lr,
                          launcher=args.launcher, deterministic=args.deterministic,
                          compile=args.compile, lock=True)
    # a flag the config cannot take (--tta, --out, --amp, ...), a checkpoint that is no file
    # (missing, a folder, cut off), a work dir another training writes into: one line, as
    # argparse refuses a bad flag
    except (ValueError, FileNotFoundError, IsADirectoryError, WorkDirInUseError) as e:
        sys.exit(f'error: {e}')
    own_group = init_cpu_distributed(cfg, args.launcher)
    stop_on_sigterm()  # a scheduler's stop unwinds as Ctrl-C does, and is reported
    with naming_data_errors(cfg):  # a cut-off annotation file, an empty dataset
        runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
        try:
            runner.train()
        except (KeyboardInterrupt, Stopped) as e:
            # a traceback through whatever ran at that moment had said nothing of what was kept
            from mmengine.dist import is_main_process
            if is_main_process():
                print(stopped_message(cfg, e), file=sys.stderr, flush=True)
            sys.exit(130 if isinstance(e, KeyboardInterrupt) else 128 + e.signum)
    del runner  # DDP and its process group references go before the group closes
    finish_cpu_distributed(own_group)


if __name__ == '__main__':
    try:
        main()
    # --resume with a changed model, an init_cfg checkpoint that cannot be read, --launcher
    # pytorch without torchrun: named, no traceback
    except (CheckpointMismatchError, CheckpointReadError, LauncherError, DataFileError) as e:
        sys.exit(f'error: {e}')
