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
