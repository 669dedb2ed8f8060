"""What ``tools/train.py`` and ``tools/test.py`` do to a config before building the Runner,
for detection and segmentation configs alike (mm users' flags keep their meaning)."""
import argparse
import contextlib
import copy
import json
import logging
import os
import os.path as osp
import re
import sys
from typing import Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log


def tool_parser(description: str) -> argparse.ArgumentParser:
    """The options ``tools/train.py`` and ``tools/test.py`` share (the config, ``--work-dir``,
    ``--cfg-options``, ``--launcher``, ``--local-rank``); each tool adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where to save logs, checkpoints and metrics')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_iters=100')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def parse_tool_args(parser: argparse.ArgumentParser,
                    argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses ``argv`` and sets ``LOCAL_RANK`` from ``--local-rank`` when the launcher did not.
    A config path that is no file is refused here, as argparse refuses a bad flag (mmengine
    stopped with a traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `tools/train.py --resume CONFIG` (or --compile CONFIG): argparse takes the config as the
    # option's optional value and stops with "the following arguments are required: config".
    # A .py file is never a checkpoint or a backend: it is the config, put where it belongs
    optional = {s for a in parser._actions if a.nargs == '?' for s in a.option_strings}
    configs = [i for i, a in enumerate(argv) if a.endswith('.py')]
    if len(configs) == 1 and configs[0] > 0 and argv[configs[0] - 1] in optional:
        argv.insert(0, argv.pop(configs[0]))
    args = parser.parse_args(argv)
    from mmvtx.utils.cli import config_path
    try:  # also mmdet::swin/... (mim's and _base_'s name of a config installed with a package)
        args.config = config_path(args.config)
    except FileNotFoundError as error:
        parser.error(str(error))
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


# the top-level entries of a config that are read once it is loaded: by mmengine's Runner
# (from_cfg and __init__), by mmdet's/mmseg's/mmvtx's tools (--tta, resume) and hooks. Every
# other top-level name (max_iters, data_root, num_classes, train_pipeline, ...) is a variable
# of the config file, used while the file was read
RUN_ENTRIES = frozenset({
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg',
    'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler', 'val_evaluator',
    'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from',
    'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level', 'visualizer',
    'default_scope', 'randomness', 'experiment_name', 'model_wrapper_cfg',
    'find_unused_parameters', 'compile', 'activation_checkpointing', 'efficient_conv_bn_eval',
    'sync_bn', 'fp16', 'runner_type', 'cfg', 'tta_model', 'tta_pipeline', 'custom_imports',
    'vis_backends'})


class CfgOptionError(ValueError):
    """A ``--cfg-options`` entry refused before the config is used: one that would change
    nothing (a misspelt first name, a variable of the config file), text where the config has
    a number or a boolean, a keyword the class of its entry does not take."""


def _paths_with_value(node, value, path: str = '') -> list:
    """The dotted paths (as ``--cfg-options`` names them) under ``node`` whose value is
    ``value``."""
    found = []
    if isinstance(node, dict):
        for key, sub in node.items():
            found += _paths_with_value(sub, value, f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, sub in enumerate(node):
            found += _paths_with_value(sub, value, f'{path}.{i}')
    if path and type(node) is type(value) and node == value:
        found.append(path)
    return found


_MISSING = object()


def _deepest(cfg, parts: list) -> tuple:
    """``(node, i)``: the entry of ``cfg`` that the first ``i`` names of the dotted path
    ``parts`` reach (list items by index, as ``--cfg-options`` names them), ``i`` as large as
    the config allows."""
    node = cfg
    for i, part in enumerate(parts):
        if isinstance(node, (dict, Config)) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return node, i
    return node, len(parts)


def _config_value(cfg, key: str):
    """The value at the dotted ``key``, or ``_MISSING``."""
    parts = key.split('.')
    node, reached = _deepest(cfg, parts)
    return node if reached == len(parts) else _MISSING


def _check_option_type(cfg, key: str, value):
    """Refuses text where the config has a number or a boolean (``train_cfg.max_iters=1OO``,
    ``...with_cp=ture``): ``--cfg-options`` turns numbers and true/false into values, so text
    there is a typo; it had stopped the run with ``ValueError: invalid literal for int()``
    naming no option, or (a boolean) been taken as true."""
    old = _config_value(cfg, key)
    if old is _MISSING or not isinstance(value, str):
        return
    # only text that reads as a slip for the config's kind of value: other text may be a
    # value the setting also takes (ViT's qkv_bias True, False or 'qv'; 'auto'), which the
    # module then checks itself
    import difflib
    slip_of_bool = difflib.get_close_matches(
        value.lower(), ('true', 'false', 'yes', 'no', 'on', 'off'), n=1, cutoff=0.6)
    if isinstance(old, bool) and slip_of_bool:
        raise CfgOptionError(f'--cfg-options {key}={value}: {key} is True or False in the '
                             f'config ({old}), not text (write True or False)')
    if isinstance(old, (int, float)) and not isinstance(old, bool) and \
            re.search(r'\d', value):
        raise CfgOptionError(f'--cfg-options {key}={value}: {key} is a number in the config '
                             f'({old}), and {value!r} is not one')


# where a typed entry of a config is built, by the name of the entry holding it (the last name
# of its path that is not a list index): the registries its ``type`` is looked up in
_SECTION_REGISTRIES = (
    (('train_cfg', 'val_cfg', 'test_cfg'), ('LOOPS',)),
    (('optim_wrapper',), ('OPTIM_WRAPPERS',)),
    (('optimizer',), ('OPTIMIZERS',)),
    (('param_scheduler',), ('PARAM_SCHEDULERS',)),
    (('default_hooks', 'custom_hooks'), ('HOOKS',)),
    (('val_evaluator', 'test_evaluator', 'metrics'), ('METRICS',)),
    (('dataset', 'datasets'), ('DATASETS',)),
    (('sampler', 'batch_sampler'), ('DATA_SAMPLERS',)),
    (('pipeline', 'transforms', 'tta_pipeline'), ('TRANSFORMS',)),
    (('visualizer',), ('VISUALIZERS',)),
    (('vis_backends',), ('VISBACKENDS',)),
    (('log_processor',), ('LOG_PROCESSORS',)),
)


def _typed_class(cfg, parts: list, node: dict):
    """The class the typed entry ``node`` (at the path ``parts``) of ``cfg`` builds, looked up
    as mmengine's Runner would (the registry of its place, under the config's
    ``default_scope``); None where it cannot be told."""
    import mmengine.registry as registries
    type_ = node.get('type')
    if isinstance(type_, type):
        return type_
    if not isinstance(type_, str):
        return None
    names = [p for p in parts if not p.isdigit()]
    owner = names[-1] if names else ''
    if names[:1] == ['default_hooks'] and len(names) == 2:  # hooks by names of their own
        owner = 'default_hooks'
    if parts and parts[0] == 'model' and owner not in ('pipeline', 'transforms'):
        wanted = ('MODELS', 'TASK_UTILS')
    elif owner in ('train_cfg', 'val_cfg', 'test_cfg') and len(names) > 1:
        wanted = ()  # a loop is built from the top-level entry only
    else:
        wanted = next((regs for owners, regs in _SECTION_REGISTRIES if owner in owners), ())
    scope = cfg.get('default_scope') or 'mmengine'
    for name in wanted:
        try:
            with getattr(registries, name).switch_scope_and_registry(scope) as registry:
                found = registry.get(type_)
        except Exception:  # a scope or name the registry cannot resolve here: not ours to judge
            found = None
        if isinstance(found, type):
            return found
    return None


def _accepted_keywords(cls) -> Optional[set]:
    """The keyword arguments ``cls(...)`` accepts: the parameters of its ``__init__`` and of
    those of its bases that ``**kwargs`` are passed on to, up to the first ``__init__``
    without ``**kwargs``; None where a ``**kwargs`` is kept by the class itself (no base
    closes it: anything may be accepted)."""
    import inspect
    accepted = set()
    for klass in cls.__mro__:
        if klass is object:
            return None
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            return None
        accepted |= {n for n, p in params.items()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return accepted - {'self'}
    return None


def _check_new_key(cfg, key: str, value):
    """Refuses an option that adds a keyword the class of its entry does not take
    (``train_cfg.max_iter=2``, ``optim_wrapper.optimizer.weight_decy=0.1``,
    ``default_hooks.logger.intervall=1``): mmengine stopped with a ``TypeError`` only once the
    model was built and the loop, optimizer or hook made, or (a class that keeps ``**kwargs``)
    the value was dropped in silence; named here with the keywords it may have meant."""
    import difflib
    parts = str(key).split('.')
    node, i = _deepest(cfg, parts)
    if i == len(parts) or not isinstance(node, dict) or 'type' not in node:
        return
    cls = _typed_class(cfg, parts[:i], node)
    accepted = _accepted_keywords(cls) if cls is not None else None
    if accepted is None or parts[i] in accepted:
        return
    near = difflib.get_close_matches(parts[i], sorted(accepted), n=1)
    raise CfgOptionError(
        f'--cfg-options {key}={value}: {".".join(parts[:i])} builds {cls.__name__}, which takes '
        f'no {parts[i]}' + (f' (did you mean {near[0]}?)' if near else
                            f' (it takes {", ".join(sorted(accepted))})'))


def check_cfg_options(cfg: Config, options: dict):
    """Refuses (:class:`CfgOptionError`) a ``--cfg-options`` entry whose first name is not
    among what is read after the config is loaded (``RUN_ENTRIES``): a typo
    (``trian_cfg.max_iters=2``: the run went on with the config's 700 iterations), or a
    variable of the config file (``max_iters=100``: the config had already used its value in
    ``train_cfg`` and the schedulers, so that nothing changed), with the entries that hold its
    value or the names it may have meant; text where the config has a number or a boolean
    (:func:`_check_option_type`); a keyword the class of its entry does not take
    (:func:`_check_new_key`). A config of a Runner of its own (``runner_type``) may read other
    names: not checked."""
    import difflib
    if 'runner_type' in cfg:
        return
    for key, value in options.items():
        top = str(key).split('.')[0]
        if top in RUN_ENTRIES:
            _check_option_type(cfg, str(key), value)
            _check_new_key(cfg, str(key), value)
            continue
        if top not in cfg:
            near = difflib.get_close_matches(top, sorted(RUN_ENTRIES | set(cfg.keys())), n=2)
            raise CfgOptionError(
                f'--cfg-options {key}={value}: the config has no {top}, and nothing reads it '
                'once the config is loaded' + (f' (did you mean {" or ".join(near)}?)'
                                               if near else ''))
        old = cfg[top]
        users = [] if old is None or isinstance(old, bool) else [
            p for entry in sorted(RUN_ENTRIES & set(cfg.keys()))
            for p in _paths_with_value(cfg[entry], old, entry)]
        raise CfgOptionError(
            f'--cfg-options {key}={value}: {top} is a variable of the config file, used when '
            'the file was read; setting it here changes nothing' + (
                f'. Set what it was used for instead; these entries hold its value ({old!r}): '
                + ', '.join(users[:6]) + (' ...' if len(users) > 6 else '') if users else ''))


def load_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with ``--cfg-options`` merged in; an option that would
    change nothing or cannot be meant is refused (:func:`check_cfg_options`)."""
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        check_cfg_options(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def _add_hook(cfg: Config, name: str, hook: Optional[dict] = None, replace: bool = False):
    """Adds ``hook`` (default ``dict(type='mmvtx.NAME')``) to ``custom_hooks`` unless a hook of
    type ``NAME`` (any scope) is there; ``replace=True`` puts ``hook`` in its place instead."""
    hooks = list(cfg.get('custom_hooks') or [])
    others = [h for h in hooks if str(h.get('type', '')).split('.')[-1] != name]
    if len(others) < len(hooks) and not replace:
        return
    cfg.custom_hooks = others + [hook or dict(type=f'mmvtx.{name}')]


def innermost_dataset(dataset_cfg):
    """The dataset a wrapper's config (``RepeatDataset``, ``ClassBalancedDataset``, ...) wraps,
    however deep (a ``ConcatDataset``'s first); the config itself where it wraps none."""
    return innermost_datasets(dataset_cfg)[0]


def innermost_datasets(dataset_cfg) -> list:
    """The configs of every dataset that wrappers (``RepeatDataset``, ``ClassBalancedDataset``,
    ``ConcatDataset``'s ``datasets``, ...) wrap, however deep, in order: the ones that take a
    ``pipeline``; ``[dataset_cfg]`` where it wraps none."""
    if 'dataset' in dataset_cfg:
        return innermost_datasets(dataset_cfg['dataset'])
    if isinstance(dataset_cfg.get('datasets'), (list, tuple)) and dataset_cfg['datasets']:
        return [leaf for d in dataset_cfg['datasets'] for leaf in innermost_datasets(d)]
    return [dataset_cfg]


def _prepare_common(cfg: Config, config_path: str, work_dir: Optional[str], launcher: str):
    """What training and testing set alike: the launcher, the work dir (``./work_dirs/NAME``
    by default), the hook that lets mmengine load its checkpoints with
    ``torch.load(weights_only=True)`` under torch >= 2.6 and the one that refuses a neck or
    head that does not take the backbone's maps (:class:`~mmvtx.engine.BackboneFitHook`), and the
    one that converts the backbone of another codebase's whole checkpoint given as ``load_from``
    (mmdet's/mmseg's released models, :class:`~mmvtx.engine.ConvertCheckpointHook`)."""
    cfg.launcher = launcher
    _add_hook(cfg, 'SafeCheckpointLoadHook')
    _add_hook(cfg, 'ConvertCheckpointHook')
    _add_hook(cfg, 'BackboneFitHook')  # the neck/heads take what the backbone returns
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])
    # a work dir that is a file, or under one: mmengine's Runner stopped with a FileExistsError
    # / NotADirectoryError traceback after the config was built
    from mmvtx.utils.cli import output_dir_problem
    problem = output_dir_problem(str(cfg.work_dir))
    if problem:
        flag = '--work-dir' if work_dir is not None else "the config's work_dir"
        raise ValueError(f'{flag} {cfg.work_dir} {problem}')


def _launcher_rank(launcher: str) -> int:
    """The global rank of this process as its launcher set it (before the process group is
    made): torchrun's ``RANK``, slurm's ``SLURM_PROCID``, Open MPI's ``OMPI_COMM_WORLD_RANK``;
    0 without a launcher."""
    var = {'pytorch': 'RANK', 'slurm': 'SLURM_PROCID', 'mpi': 'OMPI_COMM_WORLD_RANK'}.get(launcher)
    try:
        return int(os.environ.get(var, 0)) if var else 0
    except ValueError:
        return 0


def _checkpoint_hook(cfg: Config):
    """The config of the run's checkpoint hook: ``default_hooks.checkpoint``, or where that is
    unset, a ``CheckpointHook`` (any scope) of ``custom_hooks``; None if there is none."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if hook is not None:
        return hook
    return next((h for h in cfg.get('custom_hooks') or []
                 if str(h.get('type', '')).split('.')[-1] == 'CheckpointHook'), None)


def _checkpoint_places(cfg: Config) -> tuple:
    """``(folder, filename_tmpl)`` of the checkpoints the config's checkpoint hook writes
    (``default_hooks.checkpoint``'s ``out_dir`` and ``filename_tmpl``): the folder is None
    for a remote ``out_dir`` (``s3://``), left to mmengine, and the template None for
    mmengine's default names."""
    from .reliability import checkpoint_dir
    hook = _checkpoint_hook(cfg) or {}
    out_dir = hook.get('out_dir')
    folder = None if '://' in str(out_dir or '') else checkpoint_dir(cfg.work_dir, out_dir)
    return folder, hook.get('filename_tmpl')


def prepare_train_cfg(cfg: Config, config_path: str, work_dir: Optional[str] = None,
                      amp: bool = False, resume: Optional[str] = None,
                      auto_scale_lr: bool = False, launcher: str = 'none',
                      deterministic: bool = False, compile: Optional[str] = None,
                      lock: bool = False) -> Config:
    """``compile``: a ``torch.compile`` backend; compiles the backbone (``--compile``, see
    :mod:`mmvtx.engine.compile`). ``lock``: the main process takes the work dir for this run
    (:func:`~mmvtx.engine.reliability.lock_work_dir`), before ``--resume`` looks at (and
    cleans) it; raises ``WorkDirInUseError`` if another training holds it."""
    _prepare_common(cfg, config_path, work_dir, launcher)
    if lock and _launcher_rank(launcher) == 0:
        from .reliability import lock_work_dir
        lock_work_dir(cfg.work_dir)
    if compile:
        from .compile import compile_hook_cfg
        _add_hook(cfg, 'CompileModelHook', compile_hook_cfg(compile), replace=True)
    # a resumed run continues exactly as the uninterrupted one; checkpoints written atomically
    _add_hook(cfg, 'ExactResumeHook')
    _add_hook(cfg, 'ResumeValidationHook')  # a validation a kill interrupted runs on resume
    _add_hook(cfg, 'NonFiniteCheckHook')  # NaN weights stop the run, are never saved
    ckpt_hook = _checkpoint_hook(cfg)
    if ckpt_hook is not None and not ckpt_hook.get('backend_args') and not ckpt_hook.get(
            'file_client_args') and '://' not in str(ckpt_hook.get('out_dir') or ''):
        from .reliability import ATOMIC_BACKEND
        ckpt_hook.backend_args = dict(backend=ATOMIC_BACKEND)
    if deterministic:
        randomness = dict(cfg.get('randomness') or {})
        randomness.setdefault('seed', 0)
        randomness['deterministic'] = True
        cfg.randomness = randomness
    cuda = torch.cuda.is_available()
    if amp and not cuda:
        raise ValueError('--amp needs a CUDA GPU (mmengine\'s AmpOptimWrapper); '
                         'none is available here')
    if not cuda and cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
        # a GPU recipe with AMP built in (e.g. ViTDet's), run on a CPU: train in fp32
        cfg.optim_wrapper.type = 'OptimWrapper'
        for key in ('loss_scale', 'dtype', 'use_fsdp'):
            cfg.optim_wrapper.pop(key, None)
        print_log('the config trains with AMP (AmpOptimWrapper), which needs a CUDA GPU; '
                  'none is available, so it trains in fp32', logger='current',
                  level=logging.WARNING)
    if amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            print_log('AMP is already on in the config', logger='current')
        else:
            if wrapper != 'OptimWrapper':
                raise ValueError(f'--amp needs OptimWrapper, the config has {wrapper}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            # (mmseg's configs state none: its tools/train.py has no --auto-scale-lr)
            raise ValueError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config, '
                             'the total batch (GPUs x images a GPU) its lr was set for, e.g. '
                             '--cfg-options auto_scale_lr.base_batch_size=16')
        cfg.auto_scale_lr.enable = True
    flag = '--resume'
    if resume is None and cfg.get('resume', False):
        # `resume = True` in the config (or --cfg-options resume=True), as OpenMMLab configs
        # often have it: mmengine's own resume followed last_checkpoint as it was (a cut-off
        # file stopped in torch.load, naming no file) and left interrupted writes behind. It
        # means what --resume means: with load_from, mmengine resumes from that file
        # (--resume FILE), without, from the work dir's newest checkpoint (--resume)
        if cfg.get('load_from'):
            resume, flag = str(cfg.load_from), 'load_from (with resume=True)'
        else:
            resume, flag = 'auto', 'resume=True'
    if resume == 'auto':
        from .reliability import find_resume_checkpoint, remove_partial_writes
        ckpt_dir, filename_tmpl = _checkpoint_places(cfg)
        # the interrupted writes of the work dir and of the checkpoint hook's out_dir
        for folder in dict.fromkeys([cfg.work_dir] + ([ckpt_dir] if ckpt_dir else [])):
            if osp.isdir(folder):
                remove_partial_writes(folder, filename_tmpl)
        found = find_resume_checkpoint(cfg.work_dir, ckpt_dir, filename_tmpl)
        cfg.resume = found is not None
        if found is not None:
            cfg.load_from = found
        else:
            # the first run of a job that always passes --resume: it starts as it would without
            # the flag, from the config's load_from (fine-tuning) if there is one
            start = (f"the config's load_from, {cfg.load_from}" if cfg.get('load_from')
                     else 'the start')
            where = cfg.work_dir + (f' or {ckpt_dir}' if ckpt_dir and ckpt_dir != osp.abspath(
                cfg.work_dir) else '')
            print_log(f'{flag}: no complete checkpoint in {where}; training from {start}',
                      logger='current', level=logging.WARNING)
    elif resume is not None:
        from .reliability import check_checkpoint_file
        check_checkpoint_file(resume, flag, _checkpoint_places(cfg)[1])
        cfg.resume = True
        cfg.load_from = resume
    if cfg.get('resume', False):
        # mmengine resumes with strict=False: a checkpoint of a changed model is refused by name
        _add_hook(cfg, 'CheckpointFitHook', dict(type='mmvtx.CheckpointFitHook',
                                                 action='resumed'))
        _add_hook(cfg, 'ResumeScheduleHook')  # the config's schedule, not the checkpoint's
    elif cfg.get('load_from'):
        if osp.isfile(str(cfg.load_from)):  # a missing one is named by mmengine
            from .reliability import check_checkpoint_file
            check_checkpoint_file(cfg.load_from, 'load_from')
        # fine-tuning loads what fits (strict=False); a file of which nothing fits is refused
        _add_hook(cfg, 'CheckpointFitHook', dict(type='mmvtx.CheckpointFitHook',
                                                 action='fine-tuned'))
    return cfg


def prepare_test_cfg(cfg: Config, config_path: str, checkpoint: str,
                     work_dir: Optional[str] = None, show_dir: Optional[str] = None,
                     out: Optional[str] = None, launcher: str = 'none',
                     tta: bool = False) -> Config:
    """``checkpoint`` is evaluated only if it fits the model (:class:`CheckpointFitHook`):
    mmengine alone loads any file with ``strict=False`` and evaluates what came of it.
    ``tta``: test-time augmentation as mmdet's and mmseg's ``tools/test.py --tta`` (see
    :func:`prepare_tta_cfg`)."""
    _prepare_common(cfg, config_path, work_dir, launcher)
    from .reliability import check_checkpoint_file
    # missing or cut off: named before building (a URL is left to mmengine)
    check_checkpoint_file(checkpoint, 'checkpoint')
    cfg.load_from = checkpoint
    # `resume = True` of a training config made mmengine resume from the checkpoint: a released
    # model (weights only) stopped with KeyError: 'meta', a training checkpoint built the
    # training loop and data; a test loads the weights only
    cfg.resume = False
    _add_hook(cfg, 'CheckpointFitHook')
    if tta:
        prepare_tta_cfg(cfg)
    # output places that cannot be written are refused before the test set is run: --out was
    # written (and failed, a FileExistsError traceback) after every image had been evaluated
    from mmvtx.utils.cli import output_dir_problem, output_file_problem
    if show_dir is not None:
        # <work_dir>/<timestamp>/DIR (DIR itself if absolute), made at the first drawing
        problem = output_dir_problem(osp.join(str(cfg.work_dir), show_dir))
        if problem:
            raise ValueError(f'--show-dir {show_dir} {problem}')
        vis = cfg.default_hooks.get('visualization')
        if vis is None:
            raise ValueError('--show-dir needs default_hooks.visualization in the config')
        vis_type = str(vis.get('type', '')).split('.')[-1]
        if vis_type == 'SegVisualizationHook':
            # mmseg's hook has no test_out_dir (it writes to the visualizer's save_dir,
            # relative to the current directory): ours adds mmdet's
            vis.type = 'mmvtx.SegShowDirHook'
            vis.show = False
        elif vis_type == 'DetVisualizationHook':
            # mmdet's draws rank 0's images only: under dist_test.sh, half of them with 2
            vis.type = 'mmvtx.DetShowDirHook'
        elif vis_type not in ('DetShowDirHook', 'SegShowDirHook'):
            raise ValueError(f'--show-dir needs mmdet\'s DetVisualizationHook or mmseg\'s '
                             f'SegVisualizationHook in default_hooks.visualization, not {vis_type}')
        vis.draw = True
        vis.interval = 1
        vis.test_out_dir = show_dir  # under <work_dir>/<timestamp>/
    if out is not None:
        prepare_test_out(cfg, out)
        pickle = out.endswith(('.pkl', '.pickle'))  # else (mmseg) a folder of label maps
        problem = output_file_problem(out) if pickle else output_dir_problem(out)
        if problem:
            raise ValueError(f'--out {out}{":" if pickle else ""} {problem}')
    return cfg


def prepare_test_out(cfg: Config, out: str) -> Config:
    """``tools/test.py --out``: a ``.pkl``/``.pickle`` file gets the raw predictions (mmdet's
    ``--out``; for a segmentor mmengine's ``DumpResults``). For a segmentation config any other
    name without a file suffix (or an existing folder) is mmseg's ``--out``: the predicted label
    maps are written there as PNG files by the config's IoU metric (``output_dir``), what mmseg's
    ``tools/analysis_tools/confusion_matrix.py`` reads."""
    scope = cfg.get('default_scope', 'mmdet')
    evaluator = cfg.test_evaluator
    metrics = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
    if out.endswith(('.pkl', '.pickle')):
        dump = dict(type='DumpDetResults' if scope == 'mmdet' else 'DumpResults',
                    out_file_path=out)
        cfg.test_evaluator = metrics + [dump]
        return cfg
    if scope != 'mmseg':
        raise ValueError(f'--out {out}: the predictions are dumped as a pickle, so the file '
                         'name must end with .pkl or .pickle')
    if osp.splitext(out.rstrip('/'))[1] and not osp.isdir(out):
        raise ValueError(f'--out {out}: a .pkl or .pickle file for the raw predictions, or a '
                         'folder (a name without a suffix) for the predicted label maps as '
                         'PNG files (mmseg\'s --out)')
    writers = [m for m in metrics if isinstance(m, dict) and str(m.get('type', '')).split(
        '.')[-1] in ('IoUMetric', 'CityscapesMetric')]
    if not writers:
        types = [m.get('type') if isinstance(m, dict) else m for m in metrics]
        raise ValueError(f'--out {out}: the label maps are written by mmseg\'s IoUMetric or '
                         f'CityscapesMetric (output_dir), the test_evaluator has {types}; '
                         'use --out FILE.pkl for the raw predictions')
    for metric in writers:
        metric['output_dir'] = out
        metric['keep_results'] = True  # (CityscapesMetric: keep the files)
    return cfg


def prepare_tta_cfg(cfg: Config) -> Config:
    """What mmdet's and mmseg's ``tools/test.py --tta`` do: the config's ``tta_model`` wraps its
    model and ``tta_pipeline`` replaces the test pipeline. Detection configs without them get
    mmdet's defaults (``DetTTAModel``, flip); segmentation configs need a ``tta_pipeline`` (the
    ADE20K recipes have mmseg's multi-scale + flip one). mmdet's ``DetTTAModel`` merges boxes
    only, so a detector that predicts masks (Mask R-CNN) is refused before any image is run."""
    scope = cfg.get('default_scope', 'mmdet')
    if scope == 'mmdet':
        if cfg.get('tta_model') is None:
            cfg.tta_model = dict(type='DetTTAModel', tta_cfg=dict(
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
        if cfg.get('tta_pipeline') is None:
            data_cfg = innermost_dataset(cfg.test_dataloader.dataset)
            pipeline = copy.deepcopy(data_cfg.pipeline)
            meta_keys = tuple(pipeline[-1].get('meta_keys') or (
                'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
            meta_keys += tuple(k for k in ('flip', 'flip_direction') if k not in meta_keys)
            pipeline[-1] = dict(type='TestTimeAug', transforms=[
                [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                [dict(pipeline[-1], meta_keys=meta_keys)]])
            cfg.tta_pipeline = pipeline
        tta_type = str(cfg.tta_model.get('type', '')).split('.')[-1]
        if tta_type == 'DetTTAModel' and (cfg.model.get('roi_head') or {}).get('mask_head'):
            raise ValueError(f'--tta: mmdet\'s DetTTAModel merges boxes only and this '
                             f'{cfg.model.get("type")} predicts masks (roi_head.mask_head); '
                             'set a tta_model that merges masks in the config, or test without '
                             '--tta')
    else:
        if cfg.get('tta_pipeline') is None:
            raise ValueError('--tta needs tta_pipeline in the config (the test-time '
                             'augmentations, e.g. mmseg\'s multi-scale + flip of '
                             'configs/_base_/datasets/ade20k_512x512.py)')
        if cfg.get('tta_model') is None:
            cfg.tta_model = dict(type='SegTTAModel')
    cfg.model = dict(cfg.tta_model, module=cfg.model)
    # the datasets that take a pipeline: a wrapper (RepeatDataset, ConcatDataset) takes none,
    # and mmdet's/mmseg's `dataset.pipeline = tta_pipeline` stopped it with a TypeError
    for data_cfg in innermost_datasets(cfg.test_dataloader.dataset):
        data_cfg.pipeline = copy.deepcopy(cfg.tta_pipeline)
    return cfg


class DataFileError(RuntimeError):
    """A dataset's or an evaluator's annotation file that cannot be read: the tools report it
    as one ``error:`` line naming the file."""


def annotation_files(cfg: Config) -> list:
    """The annotation files the config's datasets (``ann_file`` joined to ``data_root``, as
    mmengine's ``BaseDataset`` does) and evaluators (``ann_file``) read, in order, once each."""
    files = []
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if not isinstance(loader, dict) or not isinstance(loader.get('dataset'), dict):
            continue
        for dataset in innermost_datasets(loader['dataset']):
            ann, root = dataset.get('ann_file'), dataset.get('data_root')
            if isinstance(ann, str) and ann:
                files.append(ann if osp.isabs(ann) or not root else osp.join(root, ann))
    for key in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(key)
        for metric in evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]:
            if isinstance(metric, dict) and isinstance(metric.get('ann_file'), str):
                files.append(metric['ann_file'])
    return list(dict.fromkeys(files))


def _empty_dataset_message(dataset) -> str:
    """What an mmengine ``BaseDataset`` that ended up with no sample read, and why it kept
    none: the annotation file or folders it read, the filter that dropped what they held, the
    classes that match none of a COCO file's categories."""
    name = type(dataset).__name__
    ann_file = getattr(dataset, 'ann_file', '') or ''
    prefix = {k: v for k, v in (getattr(dataset, 'data_prefix', None) or {}).items() if v}
    where = ann_file or ', '.join(f'{k}={v}' for k, v in prefix.items()) or 'its data_root'
    suffix = getattr(dataset, 'img_suffix', None)
    if not ann_file and suffix:
        where += f' (files ending in {suffix!r})'
    try:  # read again: full_init kept only what the filter left
        loaded = len(dataset.load_data_list())
    except Exception:  # noqa: BLE001 - only a count for the message
        loaded = None
    if loaded == 0 or loaded is None:
        text = f'{name} has no samples: none was found in {where}'
    else:
        text = (f'{name} has no samples: {loaded} were read from {where} and its filter_cfg '
                f'{dict(getattr(dataset, "filter_cfg", None) or {})} dropped every one')
    classes = tuple((getattr(dataset, 'metainfo', None) or {}).get('classes') or ())
    coco = getattr(dataset, 'coco', None)
    if coco is not None and classes and not getattr(dataset, 'cat_ids', True):
        names = [c.get('name') for c in getattr(coco, 'cats', {}).values()]
        text += (f'; none of its classes {classes} is a category of {ann_file} '
                 f'({", ".join(map(str, names[:10]))}{" ..." if len(names) > 10 else ""}): '
                 'set metainfo=dict(classes=(...)) to the names of the file')
    return text


@contextlib.contextmanager
def naming_data_errors(cfg: Config):
    """``with naming_data_errors(cfg): runner.train()``: two data errors that stopped the run
    (once the model was built) with a traceback naming no file are named in one line
    (:class:`DataFileError`):

    * a JSON annotation file that is cut off or damaged: pycocotools' or mmengine's
      ``json.load`` said ``JSONDecodeError: Unterminated string starting at: line 1 column
      4991``. The config's annotation files are read again, and the one that fails in the same
      way is named;
    * a dataset with no sample (an empty folder, a wrong suffix, classes that match none of a
      COCO file's categories, so that ``filter_empty_gt`` dropped every image): mmengine said
      ``ValueError: need at least one array to concatenate``."""
    try:
        yield
    except ValueError as error:
        if not isinstance(error, json.JSONDecodeError):
            if str(error) == 'need at least one array to concatenate':
                from mmengine.dataset import BaseDataset
                tb = error.__traceback__
                while tb is not None:
                    frame = tb.tb_frame
                    if frame.f_code.co_name == '_serialize_data' and isinstance(
                            frame.f_locals.get('self'), BaseDataset):
                        raise DataFileError(_empty_dataset_message(
                            frame.f_locals['self'])) from error
                    tb = tb.tb_next
            raise
        for path in annotation_files(cfg):
            if '://' in path or not osp.isfile(path):
                continue
            try:
                with open(path, 'rb') as f:
                    json.load(f)
            except json.JSONDecodeError as e:
                if (e.msg, e.pos) == (error.msg, error.pos):
                    raise DataFileError(
                        f'annotation file {path} is not valid JSON ({e}): cut off by an '
                        'interrupted download, copy or extraction? Fetch or write it again') \
                        from error
            except (OSError, ValueError):
                continue
        raise


class Stopped(BaseException):
    """Training stopped by a signal (SIGTERM: a scheduler's stop, ``kill``); like
    ``KeyboardInterrupt`` (SIGINT, Ctrl-C) it unwinds the run, so files being written are
    left whole or removed (atomic writes)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def stop_on_sigterm():
    """SIGTERM raises :class:`Stopped` in this (the training's) process, as SIGINT raises
    ``KeyboardInterrupt``: it had ended the process on the spot, without a word. Processes
    forked later (DataLoader workers) and the processes of a distributed run keep the default
    action."""
    import signal
    main_pid = os.getpid()

    def handler(signum, frame):
        import torch.distributed as dist
        # a forked child, and a process of a distributed run (torchrun stops the others with
        # SIGTERM when one fails; one blocked in a collective would not unwind before torchrun's
        # SIGKILL): die at once, as they did
        if os.getpid() != main_pid or (dist.is_available() and dist.is_initialized()
                                       and dist.get_world_size() > 1):
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Stopped(signum)

    signal.signal(signal.SIGTERM, handler)


def stopped_message(cfg: Config, error: BaseException) -> str:
    """What a training stopped by Ctrl-C or SIGTERM leaves: the newest complete checkpoint
    (where ``--resume`` continues), or none."""
    import signal
    from .reliability import find_resume_checkpoint
    how = ('by ' + signal.Signals(error.signum).name if isinstance(error, Stopped)
           else '(Ctrl-C)')
    folder, tmpl = _checkpoint_places(cfg)
    last = find_resume_checkpoint(str(cfg.work_dir), folder, tmpl) if osp.isdir(
        str(cfg.work_dir)) else None
    if last is None:
        return (f'training stopped {how} before its first checkpoint was saved: nothing to '
                'resume from')
    return (f'training stopped {how}; the newest complete checkpoint is {last}: run the same '
            'command with --resume to continue from it')


class LauncherError(RuntimeError):
    """A ``--launcher`` the process was not started for (``pytorch`` without torchrun): the
    tools report it as one ``error:`` line."""


# what each of mmengine's launchers reads from the environment (mmengine.dist.init_dist), and
# what sets it
LAUNCHER_ENV = {
    'pytorch': (('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
                'torchrun sets them (bash tools/dist_train.sh CONFIG GPUS, tools/dist_test.sh '
                'CONFIG CHECKPOINT GPUS)'),
    'slurm': (('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
              'slurm\'s srun sets them (bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG '
              'WORK_DIR)'),
    'mpi': (('OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE',
             'MASTER_ADDR'),
            'Open MPI\'s mpirun sets the OMPI_ ones; MASTER_ADDR is the address of the machine '
            'of rank 0'),
}


def check_launcher_env(launcher: str):
    """Raises :class:`LauncherError` naming the variables ``--launcher`` reads that are not set
    and what sets them: mmengine's ``init_dist`` stopped with ``KeyError: 'RANK'`` (pytorch),
    ``KeyError: 'SLURM_PROCID'`` (slurm) or ``KeyError: 'OMPI_COMM_WORLD_LOCAL_RANK'`` (mpi)
    when the tool was started without that launcher."""
    import torch.distributed as dist
    names, how = LAUNCHER_ENV.get(launcher, ((), ''))
    unset = [k for k in names if k not in os.environ]
    if unset and not dist.is_initialized():
        raise LauncherError(f'--launcher {launcher}: {", ".join(unset)} not set; {how}; '
                            'without a launcher, leave --launcher out')


def init_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """mmengine's ``init_dist`` calls ``torch.cuda.set_device``, which fails without a GPU.
    On a CPU-only machine started by torchrun (``--launcher pytorch``) the process group is set
    up here with gloo, so that the Runner finds it ready, and DDP is told to use no device ids.
    Returns whether it did so."""
    import torch
    import torch.distributed as dist
    # mmengine's init_dist (and the group below) failed with KeyError: 'RANK'
    check_launcher_env(launcher)
    if launcher == 'pytorch' and torch.cuda.is_available() and not dist.is_initialized():
        # mmengine's init_dist puts process LOCAL_RANK on GPU LOCAL_RANK: more processes than
        # GPUs stopped the extra ones with 'CUDA error: invalid device ordinal' tracebacks
        gpus = torch.cuda.device_count()
        procs = int(os.environ.get('LOCAL_WORLD_SIZE', int(os.environ.get('LOCAL_RANK', 0)) + 1))
        if procs > gpus:
            visible = os.environ.get('CUDA_VISIBLE_DEVICES')
            raise LauncherError(
                f'--launcher pytorch: {procs} processes on this machine, one a GPU, but it has '
                f'{gpus} GPU(s)' + (f' (CUDA_VISIBLE_DEVICES={visible})' if visible is not None
                                    else '') + f': start at most {gpus} (bash '
                f'tools/dist_train.sh CONFIG {gpus}, tools/dist_test.sh CONFIG CHECKPOINT '
                f'{gpus})')
    if launcher != 'pytorch' or torch.cuda.is_available() or dist.is_initialized():
        return False
    dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']))
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None  # CPU modules
    cfg.model_wrapper_cfg = wrapper
    # PyTorch's DDP refuses SyncBatchNorm on CPU modules ("SyncBatchNorm layers only work with
    # GPU modules"): the GPU recipes' heads (UPerNet's SyncBN) become BN, as mmengine's Runner
    # reverts them without distributed training; each process then normalises its own batch
    synced = _revert_sync_bn(cfg.get('model'), 'model')
    if synced and int(os.environ['RANK']) == 0:
        print_log(f'CPU distributed training (gloo): SyncBN is GPU-only in PyTorch, so '
                  f'{", ".join(synced)} run as BN (statistics of each process\'s batch)',
                  logger='current', level=logging.WARNING)
    return True


def _revert_sync_bn(node, path: str) -> list:
    """Sets ``type='BN'`` in every norm config of ``node`` whose type is SyncBN (torch's
    ``SyncBN`` or mmcv's ``MMSyncBN``); returns their paths."""
    found = []
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
            found.append(path)
        for key, value in node.items():
            found += _revert_sync_bn(value, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += _revert_sync_bn(value, f'{path}[{i}]')
    return found


def finish_cpu_distributed(own_group: bool):
    """Closes the process group that :func:`init_cpu_distributed` opened. Call it after the
    Runner is released (``del runner``): DDP's reducer and pending gloo work hold the group and
    tensors; if they are only freed while the interpreter shuts down, gloo's worker threads
    take the GIL of a dying interpreter and the process aborts (``terminate called without an
    active exception``, about one exit in 5-20). Freed here, the group closes cleanly."""
    if own_group:
        import gc

        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel
        gc.collect()  # the DDP wrapper and its reducer, if a reference cycle still held them
        if any(isinstance(o, DistributedDataParallel) for o in gc.get_objects()):
            print_log('a DistributedDataParallel model is still referenced while its process '
                      'group closes: release the Runner first (del runner)', logger='current',
                      level=logging.WARNING)
        dist.barrier()
        dist.destroy_process_group()
