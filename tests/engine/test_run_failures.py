"""What a user sees when a run goes wrong: a resume from a checkpoint of a changed model or from
a cut-off file, a loss that turns NaN. Each stops with an error that names the bad file or
value, and the checkpoints saved before are kept."""
import glob
import os
import os.path as osp
import re
import signal
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from tests.engine.test_train_tools import shapes_data  # noqa: F401  (the data, once)
from tests.engine.test_train_tools import ROOT, SEG_CFG, run_tool, small_config


def train_cmd(cfg, work, *args):
    return [sys.executable, osp.join(ROOT, 'tools/train.py'), cfg, '--work-dir', work,
            *args]


def test_resume_with_a_changed_model_is_refused_naming_the_keys(tmp_path):
    """mmengine resumes with strict=False: a checkpoint of a changed model (here a wider
    backbone) was loaded where shapes matched and the run crashed in AdamW's first step with
    'The size of tensor a (24) must match the size of tensor b (48)'."""
    cfg = small_config(tmp_path, SEG_CFG, 'seg', iters=1, ckpt_interval=1)
    work = str(tmp_path / 'work')
    out = run_tool(train_cmd(cfg, work), cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    wider = ['--cfg-options', 'train_cfg.max_iters=2', 'model.backbone.embed_dims=48',
             'model.decode_head.in_channels=[48,96,192,384]',
             'model.auxiliary_head.in_channels=192']
    out = run_tool(train_cmd(cfg, work, '--resume', *wider), cwd=str(tmp_path))
    assert out.returncode != 0
    err = out.stderr
    assert f'error: {osp.join(work, "iter_1.pth")} does not fit the EncoderDecoder' in err, err
    assert 'it is not resumed' in err
    assert 'backbone.patch_embed.proj.weight: checkpoint (24, 3, 4, 4) vs model (48, 3, 4, 4)' \
        in err
    assert not osp.exists(osp.join(work, 'iter_2.pth'))


def test_resume_from_a_cut_off_file_names_it_and_the_good_one(tmp_path):
    """torch's error for a truncated zip ('failed finding central directory') names no file."""
    from mmengine.config import Config

    from mmvtx.engine.runner import prepare_train_cfg
    torch.save({'state_dict': {}}, tmp_path / 'iter_2.pth')
    data = (tmp_path / 'iter_2.pth').read_bytes()
    (tmp_path / 'iter_4.pth').write_bytes(data[:len(data) // 2])
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper')))
    with pytest.raises(ValueError, match=r'--resume .*iter_4\.pth: the file is incomplete .* '
                       r'the newest complete checkpoint beside it is .*iter_2\.pth'):
        prepare_train_cfg(cfg, 'x.py', resume=str(tmp_path / 'iter_4.pth'))
    with pytest.raises(FileNotFoundError, match=r'--resume .*iter_6\.pth: no such file'):
        prepare_train_cfg(cfg, 'x.py', resume=str(tmp_path / 'iter_6.pth'))
    prepare_train_cfg(cfg, 'x.py', resume=str(tmp_path / 'iter_2.pth'))
    assert cfg.resume and cfg.load_from == str(tmp_path / 'iter_2.pth')


def test_a_nan_loss_stops_the_run_and_keeps_the_good_checkpoints(tmp_path):
    """With an lr that blows up, mmengine logged 'loss: nan' and trained on with exit status 0,
    saving NaN weights (whose rotation, max_keep_ckpts, deletes the good checkpoints)."""
    cfg = small_config(tmp_path, SEG_CFG, 'seg', iters=4, ckpt_interval=1)
    work = str(tmp_path / 'work')
    out = run_tool(train_cmd(cfg, work, '--cfg-options', 'optim_wrapper.optimizer.lr=1e8',
                             'default_hooks.checkpoint.max_keep_ckpts=1'), cwd=str(tmp_path))
    assert out.returncode != 0, out.stdout[-3000:]
    assert 'FloatingPointError: iteration 2: the loss is not finite (loss=nan' in out.stderr
    assert 'backbone.' in out.stderr.split('FloatingPointError')[-1]  # the weights are named
    assert f'The last checkpoint is {osp.join(work, "iter_1.pth")}' in out.stderr
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(work, '*.pth'))) == ['iter_1.pth']
    from mmvtx.engine import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    state = torch.load(osp.join(work, 'iter_1.pth'), weights_only=True)['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_a_skipped_step_with_a_nan_loss_goes_on():
    """AMP's loss scaler skips a step whose gradients are not finite: the weights stay finite
    and training goes on; a checkpoint of NaN weights is never written."""
    from mmvtx.engine import NonFiniteCheckHook
    model = torch.nn.Linear(2, 2)
    runner = SimpleNamespace(model=model, iter=6, work_dir='/nonexistent')
    hook = NonFiniteCheckHook()
    hook.after_train_iter(runner, 6, outputs={'loss': torch.tensor(float('inf'))})
    hook.before_save_checkpoint(runner, {})
    with torch.no_grad():
        model.bias[1] = float('nan')
    with pytest.raises(FloatingPointError, match=r'iteration 7: the loss is not finite '
                       r'\(loss=nan\) .*\(bias\)'):
        hook.after_train_iter(runner, 6, outputs={'loss': torch.tensor(float('nan'))})
    with pytest.raises(FloatingPointError, match=r'iteration 7: weights are NaN .*\(bias\)'):
        hook.before_save_checkpoint(runner, {})


WRITE_OVER_LIMIT = r'''
import resource, sys
from mmvtx.engine.reliability import atomic_write
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # as a full disk: write() fails
try:
    atomic_write(b'x' * 10000, sys.argv[1])
except OSError as e:
    print(e)
'''


def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_old_one(tmp_path):
    """A full disk (here a file size limit) failed the write with '[Errno 27] File too large'
    and no file name; the checkpoint it would have replaced stays as it was, nothing partial is
    left."""
    path = tmp_path / 'iter_4.pth'
    path.write_bytes(b'old checkpoint')
    out = run_tool([sys.executable, '-c', WRITE_OVER_LIMIT, str(path)], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert f"File too large (writing it; the file there before, if any, is unchanged): " \
        f"'{path}'" in out.stdout, out.stdout
    assert path.read_bytes() == b'old checkpoint'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_4.pth']


def test_resume_without_a_checkpoint_keeps_the_configs_load_from(tmp_path):
    """``--resume`` in a job script (resume if preempted) on its first run: with no checkpoint
    in the work dir, the run starts as it would without the flag. The config's ``load_from``
    (a detector to fine-tune from) had been set to None, so the run trained without it."""
    from mmengine.config import Config

    from mmvtx.engine.runner import prepare_train_cfg
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper'), load_from='released.pth'))
    prepare_train_cfg(cfg, 'x.py', work_dir=str(tmp_path / 'work'), resume='auto')
    assert not cfg.resume and cfg.load_from == 'released.pth'
    torch.save({'state_dict': {}}, tmp_path / 'iter_2.pth')
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper'), load_from='released.pth'))
    prepare_train_cfg(cfg, 'x.py', work_dir=str(tmp_path), resume='auto')
    assert cfg.resume and cfg.load_from == str(tmp_path / 'iter_2.pth')


def test_resume_from_a_weights_only_file_names_it():
    """``--resume FILE`` of a file with the model's weights but no training state (a released
    model, ``torch.save({'state_dict': ...})``) passed the fit check and stopped in mmengine's
    resume with ``KeyError: 'meta'``, naming no file."""
    from mmvtx.engine import CheckpointFitHook
    from mmvtx.utils.checkpoint import CheckpointMismatchError
    from tests.engine.test_evaluation_tools import _detector
    model = _detector('swin')
    runner = SimpleNamespace(model=model, _load_from='released.pth')
    hook = CheckpointFitHook('resumed')
    sd = model.state_dict()
    with pytest.raises(CheckpointMismatchError, match=r"released\.pth holds weights only, not "
                       r"the state of a training run \(no meta\['epoch'\], meta\['iter'\], "
                       r"'message_hub'.* give it as load_from without --resume \(and "
                       r"resume=False in the config"):
        hook.after_load_checkpoint(runner, {'state_dict': sd})
    hook.after_load_checkpoint(runner, {'state_dict': sd, 'meta': dict(epoch=0, iter=4),
                                        'message_hub': {}})


def test_a_cut_off_checkpoint_to_test_or_fine_tune_from_is_named(tmp_path):
    """``tools/test.py CONFIG CKPT`` and ``load_from`` with a file cut off while copying stopped
    with torch's 'failed finding central directory', naming no file (``--resume`` named it)."""
    from mmengine.config import Config

    from mmvtx.engine.runner import prepare_test_cfg, prepare_train_cfg
    torch.save({'state_dict': {}}, tmp_path / 'iter_2.pth')
    data = (tmp_path / 'iter_2.pth').read_bytes()
    (tmp_path / 'iter_4.pth').write_bytes(data[:len(data) // 2])
    cut = str(tmp_path / 'iter_4.pth')
    with pytest.raises(ValueError, match=r'checkpoint .*iter_4\.pth: the file is incomplete .* '
                       r'the newest complete checkpoint beside it is .*iter_2\.pth'):
        prepare_test_cfg(Config(dict()), 'x.py', cut)
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper'), load_from=cut))
    with pytest.raises(ValueError, match=r'load_from .*iter_4\.pth: the file is incomplete'):
        prepare_train_cfg(cfg, 'x.py', work_dir=str(tmp_path / 'work'))
    prepare_test_cfg(Config(dict()), 'x.py', str(tmp_path / 'iter_2.pth'))


def test_a_damaged_checkpoint_to_test_fine_tune_or_resume_from_is_named(tmp_path):
    """``tools/test.py CONFIG CKPT``, ``load_from`` and ``--resume CKPT`` with a file whose
    tensor bytes were damaged after it was written (a hole of zeros): mmengine's torch.load does
    not check the CRC-32 torch.save writes, and the damaged weights were evaluated or trained
    on without a word."""
    from mmengine.config import Config

    from mmvtx.engine.runner import prepare_test_cfg, prepare_train_cfg
    from tests.utils.test_checkpoint_files import _zero_record
    weights = {'state_dict': {'w': torch.randn(4096)}, 'meta': {'iter': 2}}
    torch.save(weights, tmp_path / 'iter_2.pth')
    damaged = tmp_path / 'iter_4.pth'
    damaged.write_bytes((tmp_path / 'iter_2.pth').read_bytes())
    _zero_record(damaged, 'data/0')
    assert not torch.equal(torch.load(damaged, weights_only=True)['state_dict']['w'],
                           weights['state_dict']['w'])  # what mmengine would load
    with pytest.raises(ValueError, match=r'checkpoint .*iter_4\.pth: the file is damaged: its '
                       r"record '.*data/0' fails the CRC-32 check"):
        prepare_test_cfg(Config(dict()), 'x.py', str(damaged))
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper'), load_from=str(damaged)))
    with pytest.raises(ValueError, match=r'load_from .*iter_4\.pth: the file is damaged'):
        prepare_train_cfg(cfg, 'x.py', work_dir=str(tmp_path / 'work'))
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper')))
    with pytest.raises(ValueError, match=r'--resume .*iter_4\.pth: the file is damaged'):
        prepare_train_cfg(cfg, 'x.py', work_dir=str(tmp_path / 'work'), resume=str(damaged))
    prepare_test_cfg(Config(dict()), 'x.py', str(tmp_path / 'iter_2.pth'))


def test_resume_follows_the_configs_longer_schedule(tmp_path):
    """mmengine's resume loaded each scheduler's settings from the checkpoint: a run resumed
    with a longer schedule (PolyLR's end raised with max_iters) kept the old end, and trained
    the added iterations at eta_min (here 0), with no word."""
    from mmengine.config import Config
    from mmengine.optim import PolyLR

    from mmvtx.engine import ResumeScheduleHook
    from mmvtx.engine.runner import prepare_train_cfg
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper')))
    torch.save({'state_dict': {}}, tmp_path / 'iter_5.pth')
    prepare_train_cfg(cfg, 'x.py', resume=str(tmp_path / 'iter_5.pth'))
    assert dict(type='mmvtx.ResumeScheduleHook') in cfg.custom_hooks

    def schedule(end):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return optimizer, PolyLR(optimizer, eta_min=0.0, begin=0, end=end, by_epoch=False)

    optimizer, scheduler = schedule(10)  # trained 5 of 10 iterations, then stopped
    for _ in range(5):
        scheduler.step()
    checkpoint = {'optimizer': optimizer.state_dict(),
                  'param_schedulers': [scheduler.state_dict()]}

    def resume(hook):
        optimizer, scheduler = schedule(20)  # resumed with 20 iterations
        if hook:
            runner = SimpleNamespace(param_schedulers=[scheduler], _resume=True)
            ResumeScheduleHook().after_load_checkpoint(runner, checkpoint)
        optimizer.load_state_dict(checkpoint['optimizer'])
        scheduler.load_state_dict(checkpoint['param_schedulers'][0])
        lrs = []
        for _ in range(15):
            scheduler.step()
            lrs.append(optimizer.param_groups[0]['lr'])
        return lrs

    assert resume(hook=False)[5] == 0.0  # what mmengine did: the old end, 0 from iteration 10
    lrs = resume(hook=True)  # from where it stood (0.44) down to 0 at iteration 20
    assert lrs[0] > lrs[5] > lrs[12] > 0 and lrs[-1] == 0.0
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert checkpoint['param_schedulers'][0]['end'] == 20


def test_launcher_pytorch_without_torchrun_says_how_to_start(monkeypatch, tmp_path):
    """``python tools/train.py CONFIG --launcher pytorch`` (not started by torchrun) stopped with
    ``KeyError: 'RANK'``."""
    from mmengine.config import Config

    from mmvtx.engine.runner import init_cpu_distributed
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match=r'--launcher pytorch: RANK, WORLD_SIZE, MASTER_ADDR, '
                       r'MASTER_PORT not set; torchrun sets them \(bash tools/dist_train.sh'):
        init_cpu_distributed(Config(), 'pytorch')
    assert init_cpu_distributed(Config(), 'none') is False
    # as the tools report it: one error: line (it was that RuntimeError's traceback)
    torch.save({'state_dict': {}}, tmp_path / 'some.pth')
    for script in ('train.py', 'test.py'):
        checkpoint = [str(tmp_path / 'some.pth')] if script == 'test.py' else []
        out = run_tool([sys.executable, osp.join(ROOT, 'tools', script), SEG_CFG, *checkpoint,
                        '--launcher', 'pytorch'], cwd=ROOT, timeout=120)
        assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr[-2000:]
        assert 'error: --launcher pytorch: RANK, WORLD_SIZE' in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize('launcher, names, how', [
    ('slurm', 'SLURM_PROCID, SLURM_NTASKS, SLURM_NODELIST', "slurm's srun sets them"),
    ('mpi', 'OMPI_COMM_WORLD_LOCAL_RANK, OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, '
            'MASTER_ADDR', "Open MPI's mpirun sets"),
])
def test_launcher_slurm_or_mpi_outside_it_says_what_is_missing(monkeypatch, launcher, names,
                                                               how):
    """``--launcher slurm`` (or ``mpi``), which the tools' --help offers, in a process that srun
    (mpirun) did not start stopped with mmengine's ``KeyError: 'SLURM_PROCID'``
    (``'OMPI_COMM_WORLD_LOCAL_RANK'``) traceback; now one error naming every variable that
    launcher reads and is not set, and what sets them, as ``--launcher pytorch`` without
    torchrun (whose test runs the tools: they print a LauncherError as one error: line)."""
    from mmengine.config import Config

    from mmvtx.engine.runner import LauncherError, init_cpu_distributed
    for key in names.split(', '):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(LauncherError) as error:
        init_cpu_distributed(Config(), launcher)
    assert str(error.value).startswith(f'--launcher {launcher}: {names} not set; {how}')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')  # only what is missing is named
    with pytest.raises(LauncherError) as error:
        init_cpu_distributed(Config(), launcher)
    assert f': {names.replace(", MASTER_ADDR", "")} not set' in str(error.value)


def test_more_processes_than_gpus_is_named_before_any_process_takes_a_gpu(monkeypatch):
    """``bash tools/dist_train.sh CONFIG 4`` on a machine with 2 GPUs (or CUDA_VISIBLE_DEVICES
    naming 2): mmengine puts process LOCAL_RANK on GPU LOCAL_RANK, and processes 2 and 3 stopped
    with ``CUDA error: invalid device ordinal`` tracebacks. Every process now stops with one
    line naming the counts and the command that fits."""
    from mmengine.config import Config

    from mmvtx.engine.runner import LauncherError, init_cpu_distributed
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0,3')
    for key, value in dict(WORLD_SIZE='4', MASTER_ADDR='127.0.0.1', MASTER_PORT='29500',
                           LOCAL_WORLD_SIZE='4').items():
        monkeypatch.setenv(key, value)
    for rank in ('0', '3'):  # the first process too: the others would wait for it
        monkeypatch.setenv('RANK', rank)
        monkeypatch.setenv('LOCAL_RANK', rank)
        with pytest.raises(LauncherError, match=re.escape(
                '--launcher pytorch: 4 processes on this machine, one a GPU, but it has 2 '
                'GPU(s) (CUDA_VISIBLE_DEVICES=0,3): start at most 2 (bash tools/dist_train.sh '
                'CONFIG 2')):
            init_cpu_distributed(Config(), 'pytorch')
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')  # as many as GPUs: left to mmengine's NCCL
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('LOCAL_RANK', '1')
    assert init_cpu_distributed(Config(), 'pytorch') is False


def test_a_missing_config_or_checkpoint_is_named_before_anything_is_built(tmp_path, capsys):
    """``tools/train.py configs/swin/typo.py`` stopped with mmengine's traceback; ``tools/test.py
    CONFIG missing.pth`` built the model and the test set first, then stopped with mmengine's
    traceback ``missing.pth can not be found`` from inside the Runner."""
    from mmengine.config import Config

    from mmvtx.engine.runner import parse_tool_args, prepare_test_cfg, tool_parser
    missing = str(tmp_path / 'typo.py')
    with pytest.raises(SystemExit) as exit_info:
        parse_tool_args(tool_parser('train'), [missing])
    assert exit_info.value.code == 2
    assert f'error: config {missing}: no such file' in capsys.readouterr().err
    assert parse_tool_args(tool_parser('train'), [SEG_CFG]).config == SEG_CFG
    cfg = Config(dict(default_hooks=dict()))
    with pytest.raises(FileNotFoundError, match=f'checkpoint {tmp_path / "nope.pth"}: no such'):
        prepare_test_cfg(cfg, SEG_CFG, str(tmp_path / 'nope.pth'))
    prepare_test_cfg(cfg, SEG_CFG, 'https://example.org/model.pth')  # fetched by mmengine
    assert cfg.load_from == 'https://example.org/model.pth'


def test_a_folder_given_as_the_checkpoint_is_named_as_a_folder(tmp_path):
    """``--resume work_dirs/exp`` (the work dir, not a file in it) and ``tools/test.py CONFIG
    work_dirs/exp`` said ``no such file`` of a folder that is there."""
    from mmvtx.engine.reliability import check_checkpoint_file
    work = tmp_path / 'exp'
    work.mkdir()
    with pytest.raises(IsADirectoryError, match=f'--resume {work} is a folder, not a checkpoint '
                       f'file; --resume alone resumes from the newest complete checkpoint of '
                       f'the work dir: --resume --work-dir {work}'):
        check_checkpoint_file(str(work))
    with pytest.raises(IsADirectoryError, match=f'checkpoint {work} is a folder, not a '
                       'checkpoint file'):
        check_checkpoint_file(str(work), 'checkpoint')
    with pytest.raises(FileNotFoundError, match=f'checkpoint {work / "x.pth"}: no such file'):
        check_checkpoint_file(str(work / 'x.pth'), 'checkpoint')


def _cut_off_run(folder, names=('iter_2.pth', 'iter_4.pth')):
    """``folder`` as a killed run without atomic writes leaves it: a complete checkpoint, a
    newer one cut off, and an interrupted write's temporary file."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': {}}, folder / names[0])
    data = (folder / names[0]).read_bytes()
    (folder / names[1]).write_bytes(data[:len(data) // 2])
    (folder / f'.{names[1]}.abc123.tmp').write_bytes(data[:10])
    return str(folder / names[0]), str(folder / names[1])


def test_the_config_after_resume_is_the_config(tmp_path, monkeypatch):
    """``tools/train.py --resume CONFIG``: argparse took the config as the checkpoint to resume
    from and stopped with "the following arguments are required: config"."""
    from tools.train import parse_args
    monkeypatch.setenv('LOCAL_RANK', '0')  # what parse_args sets, undone after the test
    config = tmp_path / 'cfg.py'
    config.write_text("optim_wrapper = dict(type='OptimWrapper')\n")
    for argv, resume, compile in (
            (['--resume', str(config)], 'auto', None),
            (['--work-dir', 'w', '--resume', str(config)], 'auto', None),
            (['--compile', str(config), '--resume', 'x.pth'], 'x.pth', 'inductor'),
            ([str(config), '--resume'], 'auto', None),
            ([str(config), '--resume', 'x.pth'], 'x.pth', None)):
        args = parse_args(argv)
        assert (args.config, args.resume, args.compile) == (str(config), resume, compile), argv


@pytest.mark.parametrize('how', ['config', 'cfg-options'])
def test_resume_true_in_the_config_is_resume(tmp_path, how, monkeypatch):
    """``resume = True`` in a config (an OpenMMLab habit; or ``--cfg-options resume=True``)
    without ``--resume`` went to mmengine's own resume: it followed ``last_checkpoint`` to a
    cut-off file (torch's error names no file) and left the interrupted write's temporary file.
    It now takes the newest complete checkpoint as ``--resume`` does, and with ``load_from``
    checks that file as ``--resume FILE`` does."""
    from mmengine.config import Config

    from tools.train import parse_args
    from mmvtx.engine.runner import load_config, prepare_train_cfg
    monkeypatch.setenv('LOCAL_RANK', '0')  # what parse_args sets, undone after the test
    good, cut = _cut_off_run(tmp_path / 'work')
    (tmp_path / 'work' / 'last_checkpoint').write_text(cut)
    config = tmp_path / 'cfg.py'
    config.write_text("optim_wrapper = dict(type='OptimWrapper')\n" +
                      ('resume = True\n' if how == 'config' else ''))
    argv = [str(config), '--work-dir', str(tmp_path / 'work')]
    args = parse_args(argv + (['--cfg-options', 'resume=True'] if how == 'cfg-options' else []))
    cfg = load_config(args)
    prepare_train_cfg(cfg, args.config, work_dir=args.work_dir, resume=args.resume)
    assert cfg.resume and cfg.load_from == good
    assert not glob.glob(str(tmp_path / 'work' / '.*.tmp'))  # the interrupted write is removed
    assert dict(type='mmvtx.ResumeScheduleHook') in cfg.custom_hooks
    # resume=True with load_from: mmengine resumes from that file, checked as --resume FILE
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper'), resume=True, load_from=cut))
    with pytest.raises(ValueError, match=r'load_from \(with resume=True\) .*iter_4\.pth: the '
                       r'file is incomplete .* the newest complete checkpoint beside it is '
                       r'.*iter_2\.pth'):
        prepare_train_cfg(cfg, 'x.py', work_dir=str(tmp_path / 'other'))
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper'), resume=True, load_from=good))
    prepare_train_cfg(cfg, 'x.py', work_dir=str(tmp_path / 'other'))
    assert cfg.resume and cfg.load_from == good


@pytest.mark.parametrize('custom', [False, True], ids=['default_hooks', 'custom_hooks'])
@pytest.mark.parametrize('hook', [dict(filename_tmpl='ckpt_{:04d}.pth'),
                                  dict(out_dir='OUT'),
                                  dict(out_dir='OUT', filename_tmpl='model_{}')])
def test_resume_finds_checkpoints_where_the_hook_writes_them(tmp_path, hook, custom):
    """``--resume`` with no ``last_checkpoint`` looked for ``iter_*.pth`` / ``epoch_*.pth`` in
    the work dir only: checkpoints of a custom ``filename_tmpl``, or under ``out_dir`` (mmengine
    writes to ``out_dir/<work dir's name>``), were not found, the run trained from the start
    and the interrupted writes there stayed. The same for a checkpoint hook declared in
    ``custom_hooks`` (``default_hooks.checkpoint=None``), whose checkpoints are also written
    atomically."""
    from mmengine.config import Config

    from mmvtx.engine.runner import prepare_train_cfg
    hook = {k: str(tmp_path / v) if k == 'out_dir' else v for k, v in hook.items()}
    tmpl = hook.get('filename_tmpl', 'iter_{}.pth')
    folder = tmp_path / 'OUT' / 'run' if 'out_dir' in hook else tmp_path / 'run'
    good, cut = _cut_off_run(folder, (tmpl.format(2), tmpl.format(4)))
    torch.save({'state_dict': {}}, tmp_path / 'run.pth')  # not a checkpoint of the run
    ckpt_hook = dict(type='CheckpointHook', interval=2, by_epoch=False, **hook)
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper'),
                      default_hooks=dict(checkpoint=None if custom else ckpt_hook),
                      custom_hooks=[ckpt_hook] if custom else []))
    prepare_train_cfg(cfg, 'x.py', work_dir=str(tmp_path / 'run'), resume='auto')
    assert cfg.resume and cfg.load_from == good
    written = cfg.custom_hooks[0] if custom else cfg.default_hooks.checkpoint
    assert written.backend_args['backend'] == 'mmvtx_atomic'
    assert not glob.glob(str(folder / '.*.tmp'))
    # --resume FILE of a cut-off file names the good one beside it
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] == 'CheckpointHook']
    with pytest.raises(ValueError, match=f'the newest complete checkpoint beside it is '
                       f'{re.escape(good)}'):
        prepare_train_cfg(cfg, 'x.py', work_dir=str(tmp_path / 'run'), resume=cut)


def test_resume_true_in_the_config_does_not_resume_a_test(tmp_path):
    """``tools/test.py`` with a training config of ``resume = True``: mmengine resumed from the
    checkpoint to test, and a released model (weights only) stopped with KeyError: 'meta'.
    A test loads the weights only."""
    from mmengine.config import Config

    from mmvtx.engine.runner import prepare_test_cfg
    torch.save({'state_dict': {}}, tmp_path / 'model.pth')
    cfg = Config(dict(resume=True))
    prepare_test_cfg(cfg, 'x.py', str(tmp_path / 'model.pth'), work_dir=str(tmp_path))
    assert cfg.resume is False and cfg.load_from == str(tmp_path / 'model.pth')


def test_a_nan_stop_names_the_last_checkpoint_where_the_hook_writes(tmp_path):
    """The NaN stop's advice named the newest checkpoint of the work dir only: with the
    checkpoint hook's ``out_dir`` and ``filename_tmpl`` (and no ``last_checkpoint`` yet read)
    it said 'Train again' though a checkpoint was there to resume from."""
    from mmvtx.engine import NonFiniteCheckHook
    (tmp_path / 'work').mkdir()
    folder = tmp_path / 'out' / 'work'
    folder.mkdir(parents=True)
    torch.save({}, folder / 'ckpt_0002.pth')
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.bias[0] = float('nan')
    ckpt_hook = SimpleNamespace(out_dir=str(folder), filename_tmpl='ckpt_{:04d}.pth')
    runner = SimpleNamespace(model=model, iter=3, work_dir=str(tmp_path / 'work'),
                             hooks=[ckpt_hook])
    with pytest.raises(FloatingPointError, match=f'The last checkpoint is '
                       f'{folder / "ckpt_0002.pth"}: resume from it'):
        NonFiniteCheckHook().before_save_checkpoint(runner, {})


HOLD_LOCK = r'''
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, b'pid %d on the other terminal' % os.getpid())
print('held', flush=True)
time.sleep(120)
'''


def test_a_second_training_into_a_busy_work_dir_is_refused_and_harms_nothing(tmp_path):
    """Two trainings in one work dir (a second ``make demo``, a ``--resume`` started while the
    first still runs) wrote their ``iter_N.pth`` under the same names, and the second's
    ``--resume`` deleted the temporary file of the checkpoint the first was writing (it then
    crashed). The second is refused in one line naming the work dir and the process that holds
    it, before it touches anything there; once that process is gone, however it ended, the
    work dir is free again."""
    import subprocess

    from mmvtx.engine import reliability
    from mmvtx.engine.reliability import TRAIN_LOCK_FILE, WorkDirInUseError, lock_work_dir
    work = tmp_path / 'work'
    work.mkdir()
    writing = work / '.iter_4.pth.x1y2.tmp'  # the first run's checkpoint being written
    writing.write_bytes(b'PK\x03\x04 half a checkpoint')
    holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, str(work / TRAIN_LOCK_FILE)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        out = run_tool(train_cmd(SEG_CFG, str(work), '--resume'), cwd=str(tmp_path),
                       timeout=120)
        assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr[-2000:]
        assert (f'error: work dir {work} is in use by another training (pid {holder.pid} on '
                'the other terminal)') in out.stderr, out.stderr[-2000:]
        assert writing.exists()  # the first run's write left alone
        assert sorted(p.name for p in work.iterdir()) == sorted([writing.name, TRAIN_LOCK_FILE])
        with pytest.raises(WorkDirInUseError, match='give this one another --work-dir'):
            lock_work_dir(str(work))
    finally:
        holder.kill()
        holder.wait()
    lock_work_dir(str(work))  # the lock file stays behind; its process is gone: free
    with open(work / TRAIN_LOCK_FILE) as f:
        assert f.read().startswith(f'pid {os.getpid()} on ')
    # a child forked by the training (a DataLoader worker) does not keep the lock after the
    # training is gone (a worker outlives a kill -9 of its parent by seconds)
    ready, started = os.pipe()
    child = os.fork()
    if child == 0:  # os.fork has returned: the fork handlers have run
        os.write(started, b'1')
        time.sleep(60)
        os._exit(0)
    try:
        assert os.read(ready, 1) == b'1'
        os.close(reliability._HELD_LOCKS.pop(str(work / TRAIN_LOCK_FILE)))  # the training ends
        import fcntl
        with open(work / TRAIN_LOCK_FILE) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(ready)
        os.close(started)
