"""mmengine checkpoints load with ``torch.load(weights_only=True)`` once a run has started
(``SafeCheckpointLoadHook``), and ``import mmvtx`` alone changes no global state of torch."""
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

SCRIPT = r'''
import pickle, sys
import torch
from mmengine.logging import MessageHub

before = list(torch.serialization.get_safe_globals())
import mmvtx  # noqa: F401
# (torch registers its own DTensor types when torch.distributed.tensor is first imported)
added = [str(g) for g in torch.serialization.get_safe_globals() if g not in before]
assert not [g for g in added if 'mmengine' in g or 'numpy' in g or 'getattr' in g], added

hub = MessageHub.get_instance('safe-load-test')
hub.update_scalar('train/loss', 1.5)
path = sys.argv[1]
torch.save({'meta': {'message_hub': hub.state_dict()}, 'state_dict': {}}, path)
try:
    torch.load(path, weights_only=True)
    raise SystemExit('loaded before the hook ran: the check is off')
except pickle.UnpicklingError:
    pass

from mmvtx.engine import SafeCheckpointLoadHook
SafeCheckpointLoadHook().before_run(None)
ckpt = torch.load(path, weights_only=True)
assert ckpt['meta']['message_hub']['log_scalars']['train/loss'].current() == 1.5
print('OK')
'''


def test_import_changes_nothing_and_the_hook_allows_mmengine_checkpoints(tmp_path):
    out = subprocess.run([sys.executable, '-c', SCRIPT, str(tmp_path / 'ckpt.pth')], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and 'OK' in out.stdout, out.stdout + out.stderr


def test_the_tools_add_the_hook_to_every_run(tmp_path):
    import torch
    from mmengine.config import Config

    from mmvtx.engine.runner import prepare_test_cfg, prepare_train_cfg
    ckpt = str(tmp_path / 'ckpt.pth')
    torch.save({'state_dict': {}}, ckpt)  # tools/test.py refuses a checkpoint that is no file
    for prepare, args, last in ((prepare_train_cfg, (), ['mmvtx.ExactResumeHook',
                                                         'mmvtx.ResumeValidationHook',
                                                         'mmvtx.NonFiniteCheckHook']),
                                (prepare_test_cfg, (ckpt,), ['mmvtx.CheckpointFitHook'])):
        cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper'), custom_hooks=[
            dict(type='EMAHook')]))
        prepare(cfg, 'configs/x.py', *args)
        prepare(cfg, 'configs/x.py', *args)  # twice: still one hook
        types = [h['type'] for h in cfg.custom_hooks]
        assert types == ['EMAHook', 'mmvtx.SafeCheckpointLoadHook', 'mmvtx.ConvertCheckpointHook',
                         'mmvtx.BackboneFitHook'] + last


def test_checkpoints_are_written_plain_and_read_back_as_mmengine_resumes_them(tmp_path):
    """The hook writes the message hub without mmengine's or numpy's types (a trained model
    loads where no hook runs: mmdet's init_detector, DetInferencer, a plain torch.load) and
    turns it back into what mmengine's MessageHub resumes, the same histories and dtypes; the
    run's own message hub is left as it is."""
    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer, MessageHub

    from mmvtx.engine.safe_load import (SafeCheckpointLoadHook, plain_message_hub,
                                        restore_message_hub)
    hub = MessageHub.get_instance('plain-checkpoint-test')
    for i in range(5):
        hub.update_scalar('train/loss', 1.0 / (i + 1), count=i + 1)
        hub.update_scalar('train/lr', np.float32(0.1 * i))
    hub.update_info('eta', np.float64(12.5))
    hub.update_info('iter', 4)
    checkpoint = {'meta': {'iter': np.int64(4)}, 'message_hub': hub.state_dict()}
    SafeCheckpointLoadHook().before_save_checkpoint(None, checkpoint)
    assert isinstance(hub.log_scalars['train/loss'], HistoryBuffer)  # the run's hub unchanged
    path = str(tmp_path / 'plain.pth')
    torch.save(checkpoint, path)
    check = subprocess.run([sys.executable, '-c', 'import sys, torch; '
                            'torch.load(sys.argv[1], weights_only=True); print("READ")', path],
                           capture_output=True, text=True, timeout=300)
    assert 'READ' in check.stdout, check.stderr[-2000:]  # a fresh torch, nothing allowed
    loaded = torch.load(path, weights_only=True)
    assert loaded['meta']['iter'] == 4 and loaded['message_hub']['runtime_info']['eta'] == 12.5
    SafeCheckpointLoadHook().after_load_checkpoint(None, loaded)
    resumed = MessageHub.get_instance('plain-checkpoint-resumed')
    resumed.load_state_dict(loaded['message_hub'])
    for key in ('train/loss', 'train/lr'):
        want, got = hub.log_scalars[key], resumed.log_scalars[key]
        assert isinstance(got, HistoryBuffer)
        for name in ('_log_history', '_count_history'):
            assert getattr(got, name).dtype == getattr(want, name).dtype
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        assert got.mean(3) == want.mean(3) and got.max_length == want.max_length
    # a checkpoint written before (HistoryBuffer objects) passes through as it is
    old = {'message_hub': hub.state_dict()}
    buffer = old['message_hub']['log_scalars']['train/loss']
    assert restore_message_hub(old)['message_hub']['log_scalars']['train/loss'] is buffer
    assert plain_message_hub({'state_dict': {}}) == {'state_dict': {}}
