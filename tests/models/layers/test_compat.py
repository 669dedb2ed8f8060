"""mmvtx on a torch without the APIs newer than torch 2.1 (the supported minimum; mmcv 2.1.0's
released wheels are built for it): ``torch.library.custom_op`` (2.4),
``torch.compiler.is_compiling`` (2.3), ``torch.compiler.is_exporting`` (2.5) and the public
``nn.Module.register_load_state_dict_pre_hook`` (2.5). Each is hidden from the installed torch
here; before, ``import mmvtx`` failed on the first, every backbone's construction on the last
and every forward on ``is_compiling``."""
import importlib.util

import torch
from torch import nn

import mmvtx.models.layers.window as window
from mmvtx.models import CvT, SwinTransformer, ViT

SWIN = dict(arch=dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2)))


def _load_as_new_module(module, name: str):
    """Executes ``module``'s file again as a new module of its package (its import-time code
    runs against the torch as it is now)."""
    spec = importlib.util.spec_from_file_location(f'{module.__package__}.{name}',
                                                  module.__file__)
    new = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(new)
    return new


def test_window_geometry_without_torch_library_custom_op(monkeypatch):
    monkeypatch.delattr(torch.library, 'custom_op')
    old_torch_window = _load_as_new_module(window, '_window_without_custom_op')
    # the ops torch.compile calls are then the Python functions themselves, same results
    for H, W, rule in ((9, 13, 0), (5, 5, 7), (16, 10, 0)):
        got = old_torch_window._window_token_index_op(H, W, 4, 2, torch.device('cpu'),
                                                      no_shift_within=rule)
        shift = 0 if min(H, W) <= rule else 2
        index, inverse, _ = window.window_token_index(H, W, 4, shift)
        assert torch.equal(got[0], index) and torch.equal(got[1], inverse)


def test_backbones_train_without_torch_compiler_is_compiling(monkeypatch):
    models = [SwinTransformer(**SWIN, with_cp=True),
              ViT(arch='dinov2-s', embed_dims=32, num_heads=2, num_layers=2, with_cp=True),
              CvT(arch=dict(embed_dims=(16, 32, 32), depths=(1, 1, 1), num_heads=(1, 2, 2)),
                  with_cp=True)]
    monkeypatch.delattr(torch.compiler, 'is_compiling')
    x = torch.randn(2, 3, 45, 61)
    for model in models:
        outs = model.train()(x)
        sum(o.sum() for o in outs).backward()
        assert [o.shape[-2:] for o in outs] == [(12, 16), (6, 8), (3, 4), (2, 2)]
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_foreign_layouts_convert_on_load_without_the_public_pre_hook(monkeypatch):
    """The conversion on ``load_state_dict`` (a detector's file in the authors' layout) goes
    through the private pre-hook where torch has no public one, to the same outputs."""
    monkeypatch.delattr(nn.Module, 'register_load_state_dict_pre_hook')
    source = SwinTransformer(**SWIN, out_indices=(3,)).eval()
    # the authors' names: layers.N, a final norm; no per-level norms, no shift-rule record
    official = {k.replace('stages.', 'layers.').replace('norm3.', 'norm.'): v
                for k, v in source.state_dict().items() if k != 'shift_rule'}
    model = SwinTransformer(**SWIN, out_indices=(3,)).eval()
    model.load_state_dict(official)
    x = torch.randn(1, 3, 64, 40)
    with torch.no_grad():
        assert torch.equal(model(x)[0], source(x)[0])


def test_compat_falls_back_where_torch_compiler_lacks_them(monkeypatch):
    """torch 2.1/2.2: ``torch._dynamo.is_compiling``; no export check (eager: False)."""
    import mmvtx.models.layers.compat as compat

    def dynamo_is_compiling():
        return False

    monkeypatch.delattr(torch.compiler, 'is_compiling')
    monkeypatch.delattr(torch.compiler, 'is_exporting')
    monkeypatch.setattr(torch._dynamo, 'is_compiling', dynamo_is_compiling)
    old = _load_as_new_module(compat, '_compat_old_torch')
    assert old.is_compiling is dynamo_is_compiling
    assert old.is_exporting() is False
