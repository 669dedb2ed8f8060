"""Checkpoint files that cannot be read (empty, truncated, another format under the name) are
refused with an error naming the file and what is wrong with it (were SafetensorError: header
too small, EOFError, or an empty message)."""
import json
import os
import re

import numpy as np
import pytest
import torch

from mmvtx.utils.checkpoint import load_state_dict_file
from tests.conftest import jitter_


def _valid(path):
    if path.suffix == '.safetensors':
        from safetensors.torch import save_file
        save_file({'w': torch.zeros(64)}, str(path))
    elif path.suffix == '.npz':
        np.savez(path, w=np.zeros(64))
    else:
        torch.save({'w': torch.zeros(64)}, path)
    return path.read_bytes()


@pytest.mark.parametrize('ext,kind', [('.safetensors', 'not a valid .safetensors file'),
                                      ('.npz', 'not a valid .npz file'),
                                      ('.pth', 'could not be read with torch.load')])
def test_unreadable_files_are_named(tmp_path, ext, kind):
    data = _valid(tmp_path / f'ok{ext}')
    assert list(load_state_dict_file(str(tmp_path / f'ok{ext}'))) == ['w']
    for name, content in (('empty', b''), ('truncated', data[:len(data) // 2]),
                          ('garbage', b'not a checkpoint' * 4),
                          ('html', b'<!DOCTYPE html><html>404 Not Found</html>')):
        path = tmp_path / f'{name}{ext}'
        path.write_bytes(content)
        why = 'is empty (0 bytes)' if name == 'empty' else kind
        if ext == '.pth' and name in ('garbage', 'html'):  # no torch.save format at all
            why = "is not a checkpoint file: its bytes are none of torch.save's formats"
        with pytest.raises(RuntimeError, match=re.escape(str(path))) as e:
            load_state_dict_file(str(path))
        assert why in str(e.value)
        assert not str(e.value).rstrip().endswith(':')  # the reason is given


@pytest.mark.parametrize('fmt,name', [('.safetensors', 'model.safetensors?download=true'),
                                      ('.safetensors', 'pytorch_model.bin'),
                                      ('.safetensors', '0a1b2c3d4e'),  # a hub cache blob
                                      ('.pth', 'weights.safetensors'), ('.pth', 'weights.npz'),
                                      ('.npz', 'weights.pth')])
def test_a_file_is_read_as_its_content_shows(tmp_path, fmt, name):
    """A checkpoint under a name that does not tell its format (wget's name for a hub URL, a
    hub cache blob, another extension) is read as its bytes show; were refused with the
    reader of the name (torch.load's 'Weights only load failed ... weights_only=False will
    likely succeed' for a safetensors file, an AttributeError for a torch file named .npz)."""
    (tmp_path / name).write_bytes(_valid(tmp_path / f'ok{fmt}'))
    assert list(load_state_dict_file(str(tmp_path / name))) == ['w']


def test_a_legacy_format_file_that_cannot_be_read_is_named(tmp_path):
    """torch.save's legacy (pickle) format, as torch < 1.6 and mmdet 2.x's / mmseg 0.x's
    publish_model wrote their releases: a complete file loads; one cut off, or holding objects
    other than weights (a training script's argparse.Namespace), was read as a detectron2
    pickle of numpy arrays, whose first object is the legacy format's magic number, and refused
    as 'expected a state dict, got int', naming neither the file nor the reason."""
    import argparse
    from mmvtx.utils.checkpoint import CheckpointReadError
    weights = {'model': {'w': torch.arange(4096.0)}}
    torch.save(weights, tmp_path / 'old.pth', _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_dict_file(str(tmp_path / 'old.pth'))['w'], torch.arange(4096.0))
    data = (tmp_path / 'old.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) * 3 // 4])
    torch.save(dict(weights, args=argparse.Namespace(lr=0.1)), tmp_path / 'args.pth',
               _use_new_zipfile_serialization=False)
    torch.save(weights, tmp_path / 'new.pth')
    data = (tmp_path / 'new.pth').read_bytes()
    (tmp_path / 'cut_zip.pth').write_bytes(data[:len(data) * 3 // 4])
    for name, why in (('cut', 'damaged or incomplete'), ('args', 'never unpickles'),
                      ('cut_zip', 'damaged or incomplete')):
        path = tmp_path / f'{name}.pth'
        with pytest.raises(CheckpointReadError) as e:
            load_state_dict_file(str(path))
        assert str(e.value).startswith(f'{path} could not be read with torch.load'), e.value
        assert why in str(e.value)
        assert ('legacy format' in str(e.value)) == (name != 'cut_zip')
    assert 'never unpickles' not in str(e.value)  # a cut-off file holds no objects to refuse


def test_a_single_npy_array_named_npz_is_refused(tmp_path):
    np.save(tmp_path / 'a.npy', np.zeros(3))
    (tmp_path / 'a.npz').write_bytes((tmp_path / 'a.npy').read_bytes())
    with pytest.raises(RuntimeError, match='a.npz is not a valid .npz file.*single .npy array'):
        load_state_dict_file(str(tmp_path / 'a.npz'))


def test_a_file_without_weights_where_they_are_looked_for_names_its_entries(tmp_path):
    """The weights under a name the loader does not take them from (a DINO 'teacher', an
    optimizer alone, an empty state dict) were reported as an unknown format with an empty
    list of 'first keys'; the error names the file and its entries. PyTorch's tutorial name
    'model_state_dict' is a container like 'model'."""
    from mmvtx.utils.checkpoint import CheckpointMismatchError
    torch.save({'epoch': 3, 'model_state_dict': {'w': torch.zeros(2)}}, tmp_path / 'a.pth')
    assert list(load_state_dict_file(str(tmp_path / 'a.pth'))) == ['w']
    for name, ckpt, expected in (
            ('teacher', {'epoch': 3, 'teacher': {'backbone.w': torch.zeros(2)}},
             'holds no tensors, so no weights to load; its entries: epoch (int), teacher '
             '(dict holding 1 tensors)'),
            ('empty', {'meta': {}, 'state_dict': {}}, "holds no tensors under 'state_dict'")):
        path = tmp_path / f'{name}.pth'
        torch.save(ckpt, path)
        with pytest.raises(CheckpointMismatchError, match=re.escape(f'{path} {expected}')):
            load_state_dict_file(str(path))


def test_a_training_checkpoint_of_two_encoders_suggests_the_one_its_authors_evaluate(tmp_path):
    """I-JEPA's and ViT-MSN's training checkpoints hold the encoder they train and its averaged
    target encoder, which their authors evaluate and release: the error suggested
    ``prefix='encoder.'`` (the first entry), and the weights a user then loaded were not the
    published network's. The averaged one is suggested, and loads through that prefix."""
    from mmvtx.models.backbones.vit import ViT
    from mmvtx.utils.checkpoint import CheckpointMismatchError
    arch = dict(embed_dims=16, num_layers=1, num_heads=1)
    own = {k: v for k, v in ViT(arch, img_size=32, with_cls_token=False).state_dict().items()
           if not k.startswith('pyramid.')}
    target = {k: v + 1 for k, v in own.items()}
    path = tmp_path / 'ijepa.pth'
    torch.save({'encoder': {'module.' + k: v for k, v in own.items()},
                'predictor': {'module.predictor_embed.weight': torch.zeros(4, 16)},
                'target_encoder': {'module.' + k: v for k, v in target.items()},
                'epoch': 300}, path)
    model = ViT(arch, img_size=32, with_cls_token=False)
    with pytest.raises(CheckpointMismatchError, match=re.escape(
            "e.g. prefix='target_encoder.' (the averaged network its authors evaluate)")):
        model.load_pretrained(str(path))
    model.load_pretrained(str(path), prefix='target_encoder.')
    assert torch.equal(model.patch_embed.proj.weight, target['patch_embed.proj.weight'])


def test_a_training_checkpoint_is_read_without_changing_torchs_allow_list(tmp_path):
    """An mmengine training checkpoint (message hub: HistoryBuffer, numpy values) as
    init_cfg=dict(type='Pretrained') or load_backbone_checkpoint outside a run was refused
    (torch.load(weights_only=True) could not read it unless SafeCheckpointLoadHook had run);
    it is read through the same exact allow-list, for that load only."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('checkpoint-files-test')
    hub.update_scalar('train/loss', 1.5)
    path = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {'seed': np.int64(3)}, 'message_hub': hub.state_dict(),
                'state_dict': {'backbone.w': torch.ones(2)}}, path)
    before = set(torch.serialization.get_safe_globals())
    assert list(load_state_dict_file(str(path))) == ['backbone.w']
    assert set(torch.serialization.get_safe_globals()) == before


def test_reading_a_checkpoint_keeps_what_the_run_allowed(tmp_path):
    """Inside a run SafeCheckpointLoadHook has allowed mmengine's types for --resume; loading
    pretrained weights afterwards (init_weights) must leave them allowed (the scoped allow-list
    took them away on exit, and the recipes' --resume then failed)."""
    from mmvtx.engine.safe_load import allow_mmengine_checkpoints
    torch.save({'state_dict': {'w': torch.ones(2)}}, tmp_path / 'plain.pth')
    before = list(torch.serialization.get_safe_globals())
    try:
        allow_mmengine_checkpoints()
        allowed = set(torch.serialization.get_safe_globals())
        load_state_dict_file(str(tmp_path / 'plain.pth'))
        assert set(torch.serialization.get_safe_globals()) == allowed  # (in any order)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


@pytest.mark.parametrize('shard', [None, '50KB'])
def test_a_save_pretrained_folder_is_read_through_its_weights_file(tmp_path, shard):
    """transformers' save_pretrained writes a folder (config.json + model.safetensors, or shards
    named by model.safetensors.index.json): naming the folder, or the index, loads the model's
    weights; were 'checkpoint not found' for a folder that exists, and torch.load's error for
    the index."""
    from transformers import SwinBackbone, SwinConfig

    from mmvtx.models.backbones.swin import SwinTransformer
    ref = SwinBackbone(SwinConfig(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4],
                                  window_size=4, drop_path_rate=0.0,
                                  out_features=['stage1', 'stage2', 'stage3', 'stage4'])).eval()
    kw = dict(max_shard_size=shard) if shard else {}
    ref.save_pretrained(str(tmp_path / 'swin'), **kw)
    index = tmp_path / 'swin' / 'model.safetensors.index.json'
    assert index.exists() == bool(shard)
    x = torch.randn(1, 3, 61, 83)
    with torch.no_grad():
        expected = ref(x).feature_maps
    for path in [tmp_path / 'swin'] + ([index] if shard else []):
        model = SwinTransformer(dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4)),
                                window_size=4, drop_path_rate=0.0,
                                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        model.init_weights()
        with torch.no_grad():
            got = model.eval()(x)
        assert max((e - g).abs().max() for e, g in zip(expected, got)) <= 1e-5
    with pytest.raises(FileNotFoundError, match='is a folder.*none of the weights files'):
        load_state_dict_file(str(tmp_path))


@pytest.mark.parametrize('kind', ['torch', 'mmengine'])
def test_an_averaged_models_weights_load(tmp_path, kind):
    """The state dict of an averaged model (SWA/EMA: torch's AveragedModel, mmengine's
    ExponentialMovingAverage) holds ``module.`` + the weights and an update counter
    (n_averaged / steps): its weights load; were refused as a checkpoint in no known format
    (the module. prefix kept because of the counter)."""
    from mmvtx.models.backbones.swin import SwinTransformer
    from mmvtx.utils import load_backbone_checkpoint
    arch = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    src = SwinTransformer(arch)
    src.init_weights()
    if kind == 'torch':
        from torch.optim.swa_utils import AveragedModel
        averaged = AveragedModel(src)
    else:
        from mmengine.model import ExponentialMovingAverage
        averaged = ExponentialMovingAverage(src)
    torch.save(averaged.state_dict(), tmp_path / 'ema.pth')
    model = SwinTransformer(arch)
    load_backbone_checkpoint(model, str(tmp_path / 'ema.pth'))
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


@pytest.mark.parametrize('family', ['vit', 'cvt', 'sam'])
def test_a_save_pretrained_head_count_other_than_the_models_is_refused(tmp_path, family):
    """A head count changes no weight's shape, so a ViT/CvT file of another head count loaded
    silently and attended with another split of the channels (features far from the source
    network's). transformers' config.json beside the weights says the count: a model with
    another one is refused naming both; the same folder loads into a model with its count, to
    the source network's features (SAM's image encoder: the count in its vision_config)."""
    from transformers import CvtConfig, CvtModel, SamVisionConfig, SamVisionModel, ViTConfig, \
        ViTModel

    from mmvtx.models.backbones.cvt import CvT
    from mmvtx.models.backbones.vit import ViT
    from mmvtx.utils import CheckpointMismatchError
    if family == 'vit':
        ref = ViTModel(ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=256, image_size=64, layer_norm_eps=1e-6,
                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                       add_pooling_layer=False)
        build = (lambda heads: ViT(dict(embed_dims=64, num_layers=2, num_heads=heads),
                                   img_size=64, out_indices=(2,), drop_path_rate=0.0))
        right, wrong, name = 4, 2, 'num_attention_heads=4'
    elif family == 'cvt':
        ref = CvtModel(CvtConfig(embed_dim=[16, 32, 48], depth=[1, 2, 3], num_heads=[1, 2, 3],
                                 drop_path_rate=[0.0] * 3), add_pooling_layer=False)
        build = (lambda heads: CvT(dict(embed_dims=(16, 32, 48), depths=(1, 2, 3),
                                        num_heads=heads), drop_path_rate=0.0))
        right, wrong, name = (1, 2, 3), (1, 2, 1), 'num_heads=[1, 2, 3]'
    else:  # the image encoder of a whole SAM (transformers' SamModel saves vision_config)
        vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 output_channels=16, image_size=64, patch_size=16,
                                 window_size=2, global_attn_indexes=[1], mlp_dim=128)
        ref = SamVisionModel(vision)
        build = (lambda heads: ViT('sam-b', embed_dims=32, num_layers=2, num_heads=heads,
                                   img_size=64, window_size=2, global_attn_indexes=(1,),
                                   out_indices=(2,), drop_path_rate=0.0))
        right, wrong, name = 2, 4, 'num_attention_heads=2'
    jitter_(ref.eval())
    ref.save_pretrained(str(tmp_path / 'hf'))
    if family == 'sam':  # as SamModel writes it: the encoder's settings nested
        cfg_file = tmp_path / 'hf' / 'config.json'
        nested = json.loads(cfg_file.read_text())
        cfg_file.write_text(json.dumps({'model_type': 'sam', 'vision_config': nested}))
    with pytest.raises(CheckpointMismatchError, match=re.escape(name)) as e:
        build(wrong).load_pretrained(str(tmp_path / 'hf'))
    assert 'num_heads=' in str(e.value) and 'config.json' in str(e.value)
    with pytest.raises(CheckpointMismatchError, match=re.escape(name)):  # the file named itself
        build(wrong).load_pretrained(str(tmp_path / 'hf' / 'model.safetensors'))
    model = build(right).eval()
    model.load_pretrained(str(tmp_path / 'hf'))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got = model(x)
        if family == 'cvt':
            expected = ref(x).last_hidden_state
        else:  # the reference's stride-16 map through the model's own pyramid
            out = ref(x, output_hidden_states=True)
            last = out.last_hidden_state[:, 1:].transpose(1, 2).reshape(1, 64, 4, 4) \
                if family == 'vit' else out.hidden_states[-1].permute(0, 3, 1, 2)
            expected = model.pyramid([last])[0]
    assert (got[2 if family == 'cvt' else 0] - expected).abs().max() <= 1e-4


def test_a_backbone_under_a_wrapper_is_found(tmp_path):
    """A whole model's checkpoint with its backbone under a wrapper loads the backbone: PyTorch
    Lightning's ``model.backbone.`` and a DINO/DINOv2 training checkpoint's teacher (its
    ``student.backbone.`` beside it, as the authors evaluate the teacher); were refused as an
    unknown layout. Two backbones otherwise are refused naming both prefixes."""
    from mmvtx.models.backbones.swin import SwinTransformer
    from mmvtx.utils import CheckpointMismatchError, load_backbone_checkpoint
    arch = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    nets = [jitter_(SwinTransformer(arch)) for _ in range(2)]
    teacher, student = ({k: v.clone() for k, v in n.state_dict().items()} for n in nets)
    cases = {
        'lightning.ckpt': ({'state_dict': {**{f'model.backbone.{k}': v for k, v in
                                               teacher.items()},
                                            'model.head.weight': torch.zeros(3, 8)},
                            'epoch': 3, 'global_step': 120}, teacher),
        'dinov2_train.pth': ({'model': {**{f'student.backbone.{k}': v for k, v in
                                           student.items()},
                                        **{f'teacher.backbone.{k}': v for k, v in
                                           teacher.items()},
                                        'teacher.dino_head.mlp.0.weight': torch.zeros(4, 8)},
                              'iteration': 9}, teacher),
    }
    for name, (ckpt, expected) in cases.items():
        torch.save(ckpt, tmp_path / name)
        model = SwinTransformer(arch)
        load_backbone_checkpoint(model, str(tmp_path / name))
        for k, v in expected.items():
            assert torch.equal(model.state_dict()[k], v), (name, k)
    # DINOv2's teacher_checkpoint.pth (what its evaluations read: the teacher's backbone and
    # heads under 'teacher'): refused naming the entry and the prefix that loads it (was only
    # 'save the weights on their own', and prefix= could not reach into the entry)
    torch.save({'teacher': {**{f'backbone.{k}': v for k, v in teacher.items()},
                            'dino_head.mlp.0.weight': torch.zeros(4, 8)}},
               tmp_path / 'teacher_checkpoint.pth')
    with pytest.raises(CheckpointMismatchError, match=r"teacher \(dict holding \d+ tensors\)"
                       r".*e\.g\. prefix='teacher\.backbone\.'"):
        load_backbone_checkpoint(SwinTransformer(arch), str(tmp_path / 'teacher_checkpoint.pth'))
    model = SwinTransformer(arch)
    load_backbone_checkpoint(model, str(tmp_path / 'teacher_checkpoint.pth'),
                             prefix='teacher.backbone.')
    assert all(torch.equal(model.state_dict()[k], v) for k, v in teacher.items())
    # the student on request
    model = SwinTransformer(arch)
    load_backbone_checkpoint(model, str(tmp_path / 'dinov2_train.pth'),
                             prefix='student.backbone')
    assert all(torch.equal(model.state_dict()[k], v) for k, v in student.items())
    two = {**{f'ema.backbone.{k}': v for k, v in teacher.items()},
           **{f'model.backbone.{k}': v for k, v in student.items()}}
    with pytest.raises(CheckpointMismatchError, match=r"several backbones \(ema\.backbone\., "
                       r"model\.backbone\.\).*prefix='ema\.backbone\.'"):
        load_backbone_checkpoint(SwinTransformer(arch), two)


def test_a_position_grid_that_is_square_or_the_models_is_read_as_config_json_says(
        tmp_path, monkeypatch):
    """A 14x14 release (224 px, patch 16) into a ViT pretrained at 112x448 (a 7x28 grid): both
    hold 196 positions, and the file was read as the model's 7x28 grid without resampling
    (positions scrambled). transformers' config.json beside it gives image_size/patch_size:
    the 14x14 grid is resampled to 7x28, to transformers' own interpolated embedding. Without
    a config the model's grid is kept (a file saved from this model), with a warning naming
    both readings and the img_size that reads a square release right."""
    import logging

    from transformers import ViTConfig, ViTModel

    from mmvtx.models.backbones.vit import ViT
    from mmvtx.utils import logging as mmvtx_logging
    ref = jitter_(ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=128, image_size=224, patch_size=16,
                                     layer_norm_eps=1e-6, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0),
                           add_pooling_layer=False)).eval()
    ref.save_pretrained(str(tmp_path / 'hf'))
    build = (lambda: ViT(dict(embed_dims=32, num_layers=1, num_heads=2), img_size=(112, 448),
                         out_indices=(2,), drop_path_rate=0.0).eval())
    model = build()
    assert 'pos_embed' in model.load_pretrained(str(tmp_path / 'hf')).resized
    x = torch.randn(1, 3, 112, 448)
    with torch.no_grad():
        last = ref(x, interpolate_pos_encoding=True).last_hidden_state[:, 1:]
        expected = model.pyramid([last.transpose(1, 2).reshape(1, 32, 7, 28)])[0]
        assert (model(x)[0] - expected).abs().max() <= 1e-4
    logged = []
    monkeypatch.setattr(mmvtx_logging, 'print_log', lambda msg, **kw: logged.append((msg, kw)))
    monkeypatch.setattr(mmvtx_logging, '_seen', set())
    own = model  # (nothing of the config.json it read before is kept)
    converted = own.load_pretrained(ref.state_dict())  # no config.json: the model's grid
    assert 'pos_embed' not in converted.resized
    assert torch.equal(own.pos_embed, ref.state_dict()['embeddings.position_embeddings'])
    assert any('7x28' in msg and '14x14' in msg and '224x224' in msg and
               kw['level'] == logging.WARNING for msg, kw in logged), logged


def test_a_config_json_describes_only_the_weights_files_transformers_names(tmp_path):
    """A timm or converted file kept in a save_pretrained folder (a user's checkpoints folder
    holding one transformers download) was refused for the head count of the download's
    config.json, which does not describe it; it loads. transformers' own names (a wget'd
    ``model.safetensors?download=true`` among them) are still checked."""
    from transformers import ViTConfig, ViTModel

    from mmvtx.models.backbones.vit import ViT
    from mmvtx.utils import CheckpointMismatchError
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=128, image_size=64),
             add_pooling_layer=False).save_pretrained(str(tmp_path))
    build = (lambda: ViT(dict(embed_dims=32, num_layers=1, num_heads=2), img_size=64,
                         out_indices=(2,)))
    mine = jitter_(build())
    torch.save(mine.state_dict(), tmp_path / 'vit_2heads.pth')
    model = build()
    model.load_pretrained(str(tmp_path / 'vit_2heads.pth'))
    assert all(torch.equal(v, mine.state_dict()[k]) for k, v in model.state_dict().items())
    (tmp_path / 'model.safetensors').rename(tmp_path / 'model.safetensors?download=true')
    with pytest.raises(CheckpointMismatchError, match='num_attention_heads=4'):
        build().load_pretrained(str(tmp_path / 'model.safetensors?download=true'))


def test_a_hub_snapshot_whose_weights_blob_is_absent_is_named(tmp_path):
    """A hub cache snapshot links its files to blobs: an interrupted download leaves
    model.safetensors linking to nothing, and the folder was reported as holding none of the
    weights files while listing model.safetensors among its entries."""
    import os

    snapshot = tmp_path / 'models--org--vit' / 'snapshots' / 'abc123'
    snapshot.mkdir(parents=True)
    (snapshot / 'config.json').write_text('{"model_type": "vit"}')
    os.symlink('../../blobs/0f3e.incomplete', snapshot / 'model.safetensors')
    with pytest.raises(FileNotFoundError, match=r'model\.safetensors is a link to '
                       r'\.\./\.\./blobs/0f3e\.incomplete, which does not exist'):
        load_state_dict_file(str(snapshot))


def test_another_familys_weights_are_named():
    """A checkpoint of another backbone family: the Swin authors' release (``layers.i.blocks.j``
    with ``attn.qkv``) given to a ViT was converted as mmpretrain's ViT layout and refused as
    'the mmpretrain checkpoint does not fit the model' with ~140 renamed keys
    (``blocks.0.blocks.0...``); transformers' SwinModel given to a ViT (and ViTModel to a Swin)
    as 'the transformers checkpoint'. The error now says what the file holds; a whole detector's
    backbone part of another family is left in its own names for the fit check, with that
    line."""
    from transformers import SwinConfig, SwinModel, ViTConfig, ViTModel

    from mmvtx.models.backbones.cvt import CvT
    from mmvtx.models.backbones.swin import SwinTransformer
    from mmvtx.models.backbones.vit import ViT
    from mmvtx.utils.checkpoint import CheckpointMismatchError
    swin = SwinTransformer(arch=dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)))
    vit = ViT(arch=dict(embed_dims=32, num_layers=1, num_heads=1))
    cvt = CvT(embed_dims=(16, 16, 16), depths=(1, 1, 1), num_heads=(1, 1, 1))
    authors_swin = {k.replace('stages.', 'layers.'): v for k, v in swin.state_dict().items()
                    if not k.startswith(('norm', 'shift_rule'))}
    hf_swin = SwinModel(SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1]))
    hf_vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=1,
                                intermediate_size=128))
    official_cvt = {'stage' + k[len('stages.'):]: v for k, v in cvt.state_dict().items()
                    if k.startswith('stages.')}
    for sd, model, what in ((authors_swin, vit, 'a Swin Transformer'),
                            (hf_swin.state_dict(), vit, 'a Swin Transformer'),
                            (hf_vit.state_dict(), swin, 'a ViT'),
                            (official_cvt, swin, 'a CvT'), (vit.state_dict(), cvt, 'a ViT')):
        mine = {SwinTransformer: 'a Swin Transformer', ViT: 'a ViT', CvT: 'a CvT'}[type(model)]
        with pytest.raises(CheckpointMismatchError,
                           match=f'not {mine} checkpoint: it holds the weights of {what} '):
            model.load_pretrained(dict(sd))
    # each family's own files still load
    for model, sd in ((swin, authors_swin), (vit, hf_vit.state_dict()), (cvt, official_cvt)):
        model.load_pretrained(dict(sd))
    # the tools' conversion of a whole detector (ConvertCheckpointHook): the part is not renamed
    detector = {f'backbone.{k}': v for k, v in authors_swin.items()}
    unknown = []
    assert vit.convert_keys_under(detector, 'backbone.', {}, unknown) is None
    assert set(detector) == {f'backbone.{k}' for k in authors_swin}
    assert len(unknown) == 1 and 'holds the weights of a Swin Transformer' in unknown[0]


def _zero_record(path, record: str, nbytes: int = 64):
    """Zeroes ``nbytes`` in the middle of a zip record's data (a hole a segmented download
    leaves, a bad copy), the archive's directory and the other records intact."""
    import struct
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(record))
    data = bytearray(path.read_bytes())
    start = info.header_offset
    name_len, extra_len = struct.unpack('<HH', data[start + 26:start + 30])
    offset = start + 30 + name_len + extra_len + info.file_size // 2 - nbytes // 2
    data[offset:offset + nbytes] = bytes(nbytes)
    path.write_bytes(bytes(data))


def test_a_torch_file_with_damaged_tensor_bytes_is_refused(tmp_path):
    """torch.load does not check the CRC-32 that torch.save writes for each record: a .pth
    whose tensor bytes were damaged after it was written (here 64 zeroed bytes in a weight)
    loaded as weights without a word. It is refused, naming the file and the record; a file
    saved without checksums (torch's compute_crc32=False) still loads."""
    import torch.utils.serialization as serialization
    weights = {'a': torch.randn(256), 'b': torch.randn(64, 64)}
    torch.save(weights, tmp_path / 'ok.pth')
    good = tmp_path / 'ok.pth'
    assert torch.equal(load_state_dict_file(str(good))['b'], weights['b'])
    bad = tmp_path / 'damaged.pth'
    bad.write_bytes(good.read_bytes())
    _zero_record(bad, 'data/1')  # b's storage
    # the damage is real and torch reads it as weights
    assert not torch.equal(torch.load(bad, weights_only=True)['b'], weights['b'])
    with pytest.raises(RuntimeError, match=re.escape(str(bad)) + r'.*damaged.*data/1.*CRC-32'):
        load_state_dict_file(str(bad))
    saved = serialization.config.save.compute_crc32
    serialization.config.save.compute_crc32 = False
    try:
        torch.save(weights, tmp_path / 'no_crc.pth')
    finally:
        serialization.config.save.compute_crc32 = saved
    assert torch.equal(load_state_dict_file(str(tmp_path / 'no_crc.pth'))['b'], weights['b'])


def _swinv2_layouts():
    """A tiny Swin V2 as transformers' Swinv2Model names it, and as the authors' (and timm)
    name it (``attn.cpb_mlp``, ``attn.logit_scale``, ``attn.q_bias``/``v_bias``)."""
    from transformers import Swinv2Config, Swinv2Model
    hf = Swinv2Model(Swinv2Config(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                                  window_size=4)).state_dict()
    rules = (('encoder.layers.', 'layers.'), ('embeddings.patch_embeddings.projection',
                                              'patch_embed.proj'),
             ('embeddings.norm', 'patch_embed.norm'), ('layernorm.', 'norm.'),
             ('attention.self.continuous_position_bias_mlp', 'attn.cpb_mlp'),
             ('attention.self.logit_scale', 'attn.logit_scale'),
             ('attention.output.dense', 'attn.proj'), ('layernorm_before', 'norm1'),
             ('layernorm_after', 'norm2'), ('intermediate.dense', 'mlp.fc1'),
             ('output.dense', 'mlp.fc2'), ('attention.self.query.bias', 'attn.q_bias'),
             ('attention.self.value.bias', 'attn.v_bias'))
    authors = {}
    for k, v in hf.items():
        if '.attention.self.' in k and k.endswith(('query.weight', 'key.weight',
                                                   'value.weight')):
            continue
        for old, new in rules:
            k = k.replace(old, new)
        authors[k] = v
    for k in [k for k in hf if k.endswith('attention.self.query.weight')]:
        head = k[:-len('query.weight')]
        authors[head.replace('encoder.layers.', 'layers.').replace('attention.self.', '') +
                'attn.qkv.weight'] = torch.cat([hf[head + n + '.weight']
                                                for n in ('query', 'key', 'value')])
    assert 'layers.0.blocks.0.attn.cpb_mlp.0.weight' in authors
    assert 'layers.0.blocks.0.attn.qkv.weight' in authors
    return hf, authors


def test_swin_v2_weights_are_named_as_swin_v2():
    """A Swin V2 checkpoint (swinv2_tiny_patch4_window8_256.pth, timm's or transformers'
    Swinv2Model), which no mmvtx backbone computes: the authors' layout given to a
    SwinTransformer was refused as 'it holds the weights of a ViT ... Load it into a ViT', and
    transformers' as "stages.0.blocks.0: ['.attention.self.key.'] missing beside the other
    attention projections" (V2 has no key bias). The error now says it is Swin V2 and why it
    does not load, for every backbone and for a whole detector's backbone part."""
    from mmvtx.models.backbones.cvt import CvT
    from mmvtx.models.backbones.swin import SwinTransformer
    from mmvtx.models.backbones.vit import ViT
    from mmvtx.utils.checkpoint import CheckpointMismatchError
    hf, authors = _swinv2_layouts()
    swin = SwinTransformer(arch=dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)),
                           window_size=4)
    vit = ViT(arch=dict(embed_dims=32, num_layers=1, num_heads=1))
    cvt = CvT(embed_dims=(16, 16, 16), depths=(1, 1, 1), num_heads=(1, 1, 1))
    for sd in (hf, authors):
        for model in (swin, vit, cvt):
            with pytest.raises(CheckpointMismatchError) as e:
                model.load_pretrained(dict(sd))
            assert f'{type(model).__name__}: a Swin Transformer V2 checkpoint' in str(e.value)
            assert 'cpb_mlp' in str(e.value) and 'Load it into' not in str(e.value)
    detector = {f'backbone.{k}': v for k, v in authors.items()}
    unknown = []
    assert swin.convert_keys_under(detector, 'backbone.', {}, unknown) is None
    assert len(unknown) == 1 and 'a Swin Transformer V2 checkpoint' in unknown[0]


def test_a_pathlib_path_loads_as_its_str(tmp_path):
    """``init_cfg=dict(type='Pretrained', checkpoint=Path(...))``, ``load_pretrained(Path)``:
    a ``pathlib.Path`` was taken for an in-memory checkpoint and refused as 'expected a state
    dict, got PosixPath'; it loads the file as its str does (a save_pretrained folder too)."""
    from pathlib import Path

    from mmvtx.models.backbones.swin import SwinTransformer
    arch = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    src = SwinTransformer(arch)
    jitter_(src)
    torch.save({'state_dict': src.state_dict()}, tmp_path / 'swin.pth')
    (tmp_path / 'hub').mkdir()
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in src.state_dict().items()},
              str(tmp_path / 'hub' / 'model.safetensors'))
    assert set(load_state_dict_file(tmp_path / 'swin.pth')) == set(src.state_dict())
    for path in (Path(tmp_path / 'swin.pth'), Path(tmp_path / 'hub')):
        model = SwinTransformer(arch, init_cfg=dict(type='Pretrained', checkpoint=path))
        model.init_weights()
        other = SwinTransformer(arch)
        other.load_pretrained(path)
        for k, v in src.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), k
            assert torch.equal(other.state_dict()[k], v), k


def test_a_backbone_kept_under_a_name_of_its_own_is_found(tmp_path):
    """A model that keeps its image encoder under a name other than ``backbone.``:
    transformers' Mask2Former (``model.pixel_level_module.encoder.``, a COCO-trained Swin), a
    PyTorch Lightning module holding a timm ViT as ``model.``, ``torch.compile(model)``'s
    ``_orig_mod.``. Given as the backbone's
    checkpoint it was refused as 'not a ... checkpoint in a known format' (its first keys
    listed, no word of where the backbone is); the one place holding this backbone's layout is
    loaded, to the source network's features. Two such places are named, with the prefix to
    choose."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    from mmvtx.models.backbones.swin import SwinTransformer
    from mmvtx.models.backbones.vit import ViT
    from mmvtx.utils.checkpoint import CheckpointMismatchError
    swin_cfg = SwinConfig(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4],
                          window_size=4, drop_path_rate=0.0,
                          out_features=['stage1', 'stage2', 'stage3', 'stage4'])
    m2f = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(
        backbone_config=swin_cfg, hidden_dim=32, mask_feature_size=32, feature_size=32,
        encoder_layers=1, decoder_layers=2, num_queries=4, encoder_feedforward_dim=32,
        dim_feedforward=32)).eval()
    jitter_(m2f)
    m2f.save_pretrained(str(tmp_path / 'mask2former'))
    swin = SwinTransformer(dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4)),
                           window_size=4, drop_path_rate=0.0, init_cfg=dict(
                               type='Pretrained', checkpoint=str(tmp_path / 'mask2former')))
    swin.init_weights()
    x = torch.randn(1, 3, 61, 83)
    with torch.no_grad():
        want = m2f.model.pixel_level_module.encoder(x).feature_maps
        got = swin.eval()(x)
    assert max((w - g).abs().max() for w, g in zip(want, got)) <= 1e-4
    # a Lightning module's checkpoint: {'state_dict': {'model.<timm names>'}, 'epoch': ...}
    arch = dict(embed_dims=32, num_layers=2, num_heads=2)
    src = ViT(arch, img_size=64, out_indices=(2,))
    jitter_(src)
    timm = {k: v for k, v in src.state_dict().items() if not k.startswith('pyramid.')}
    lightning = {'state_dict': {f'model.{k}': v for k, v in timm.items()}, 'epoch': 3}
    vit = ViT(arch, img_size=64, out_indices=(2,))
    vit.load_pretrained(lightning)
    for k, v in timm.items():
        assert torch.equal(vit.state_dict()[k], v), k
    # the state dict of torch.compile(model): every key under _orig_mod.
    compiled = torch.compile(src).state_dict()
    assert next(iter(compiled)).startswith('_orig_mod.')
    vit = ViT(arch, img_size=64, out_indices=(2,))
    vit.load_pretrained(compiled)
    for k, v in src.state_dict().items():
        assert torch.equal(vit.state_dict()[k], v), k
    two = {f'{who}.{k}': v for who in ('student', 'ema') for k, v in timm.items()}
    with pytest.raises(CheckpointMismatchError,
                       match=r"under 'ema\.' \(timm layout\), 'student\.' \(timm layout\): "
                             r"name the one.*prefix='ema\.'"):
        vit.load_pretrained(two)
    vit.load_pretrained(two, prefix='student.')
    # CLIP's encoders are named like SAM's in transformers, its text encoder too: no place is
    # offered; the file is named as CLIP's, which mmvtx's ViT does not compute (ln_pre)
    from transformers import CLIPConfig, CLIPModel
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=1,
                 intermediate_size=64)
    clip = CLIPModel(CLIPConfig(vision_config=dict(small, image_size=32, patch_size=16),
                                text_config=small))
    with pytest.raises(CheckpointMismatchError) as e:
        ViT(arch, img_size=32).load_pretrained(clip.state_dict())
    assert str(e.value).startswith('ViT: a CLIP image encoder checkpoint')
    assert 'text_model.encoder.' not in str(e.value)
    assert 'prefix=' not in str(e.value)


def test_two_hub_models_weights_urls_are_cached_apart(tmp_path, monkeypatch):
    """Every transformers model's weights file is named ``model.safetensors``: a URL's
    download was cached under its file name alone, so the second model's URL (here
    google/vit-base-patch16-224 after google/vit-base-patch16-224-in21k, the same architecture)
    loaded the first model's weights without a word. Each is downloaded and loaded as its own;
    a release's own file name is still what the cache holds."""
    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTModel

    from mmvtx.models.backbones.vit import ViT
    from mmvtx.utils.checkpoint import checkpoint_cache_dir
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    hub, served = 'https://huggingface.co/google/', {}
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=1,
                       intermediate_size=128, image_size=32)
    for repo in ('vit-base-patch16-224-in21k', 'vit-base-patch16-224'):
        (tmp_path / repo).mkdir()
        src = ViTModel(config, add_pooling_layer=False)
        jitter_(src)
        save_file({k: v.contiguous() for k, v in src.state_dict().items()},
                  str(tmp_path / repo / 'model.safetensors'))
        served[f'{hub}{repo}/resolve/main/model.safetensors?download=true'] = \
            (tmp_path / repo / 'model.safetensors', src)
    downloads = []

    def download(url, dst, progress=True):  # the hub, served from tmp_path
        downloads.append(url)
        with open(dst, 'wb') as f:
            f.write(served[url][0].read_bytes())

    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    for url, (_, src) in served.items():
        model = ViT(dict(embed_dims=32, num_layers=1, num_heads=1), img_size=32,
                    init_cfg=dict(type='Pretrained', checkpoint=url))
        model.init_weights()
        assert torch.equal(model.patch_embed.proj.weight,
                           src.state_dict()['embeddings.patch_embeddings.projection.weight'])
    assert downloads == list(served)
    model.init_weights()  # cached: not downloaded again
    assert len(downloads) == 2 and len(os.listdir(checkpoint_cache_dir())) == 2
    released = 'https://dl.fbaipublicfiles.com/deit/deit_tiny_patch16_224-a1311bcf.pth'
    from mmvtx.utils.checkpoint import url_cache_name
    assert url_cache_name(released) == 'deit_tiny_patch16_224-a1311bcf.pth'
    assert url_cache_name(released + '?download=true') == 'deit_tiny_patch16_224-a1311bcf.pth'
    # files named by the query alone (a file host's download links) are kept apart too
    drive = 'https://drive.google.com/uc?export=download&id='
    assert len({url_cache_name(drive + i) for i in ('1AbC', '2dEf', '1AbC')}) == 2


def test_one_shard_of_a_sharded_save_reads_the_whole_save(tmp_path):
    """One file of a sharded save_pretrained (``model-00002-of-00007.safetensors``), given as
    the checkpoint, was read alone: refused as 'not a Swin Transformer checkpoint in a known
    format' (or as missing most keys), with no word of the other shards. The index beside it
    reads them all, to the source network's features; without the index the error says what
    the file is and what to fetch."""
    from transformers import SwinBackbone, SwinConfig

    from mmvtx.models.backbones.swin import SwinTransformer
    from mmvtx.utils.checkpoint import CheckpointReadError
    ref = SwinBackbone(SwinConfig(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4],
                                  window_size=4, drop_path_rate=0.0,
                                  out_features=['stage1', 'stage2', 'stage3', 'stage4'])).eval()
    jitter_(ref)
    ref.save_pretrained(str(tmp_path / 'swin'), max_shard_size='50KB')
    shards = sorted(p.name for p in (tmp_path / 'swin').glob('model-*-of-*.safetensors'))
    assert len(shards) > 2
    x = torch.randn(1, 3, 61, 83)
    with torch.no_grad():
        expected = ref(x).feature_maps
    model = SwinTransformer(dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4)),
                            window_size=4, drop_path_rate=0.0, init_cfg=dict(
                                type='Pretrained', checkpoint=str(tmp_path / 'swin' / shards[1])))
    model.init_weights()
    with torch.no_grad():
        got = model.eval()(x)
    assert max((e - g).abs().max() for e, g in zip(expected, got)) <= 1e-5
    (tmp_path / 'swin' / 'model.safetensors.index.json').unlink()
    with pytest.raises(CheckpointReadError, match=re.escape(shards[1]) + r' is shard 2 of '
                       rf'{len(shards)} of a sharded save.*model\.safetensors\.index\.json'):
        model.load_pretrained(str(tmp_path / 'swin' / shards[1]))


def test_a_hub_model_id_loads_from_the_hub_cache(tmp_path, monkeypatch):
    """``checkpoint='microsoft/swin-tiny-patch4-window7-224'``, as transformers'
    from_pretrained names a model: it was 'checkpoint not found' even where transformers had
    downloaded it. The revision main of the hub's cache ($HF_HUB_CACHE) is loaded, to the
    source network's features; an id not downloaded is named as one, with how to get it."""
    from transformers import SwinBackbone, SwinConfig

    from mmvtx.models.backbones.swin import SwinTransformer
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hub'))
    monkeypatch.chdir(tmp_path)
    ref = SwinBackbone(SwinConfig(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4],
                                  window_size=4, drop_path_rate=0.0,
                                  out_features=['stage1', 'stage2', 'stage3', 'stage4'])).eval()
    jitter_(ref)
    repo = tmp_path / 'hub' / 'models--someone--swin-mini'
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text('0123abcd')
    ref.save_pretrained(str(repo / 'snapshots' / '0123abcd'))
    other = SwinBackbone(ref.config)  # an older revision, not main
    other.save_pretrained(str(repo / 'snapshots' / '4567ef01'))
    arch = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4))
    model = SwinTransformer(arch, window_size=4, drop_path_rate=0.0, init_cfg=dict(
        type='Pretrained', checkpoint='someone/swin-mini'))
    model.init_weights()
    x = torch.randn(1, 3, 61, 83)
    with torch.no_grad():
        expected, got = ref(x).feature_maps, model.eval()(x)
    assert max((e - g).abs().max() for e, g in zip(expected, got)) <= 1e-5
    with pytest.raises(FileNotFoundError, match=r'someone/swin-small.*a Hugging Face hub model '
                       r'id\? It is not downloaded.*huggingface-cli download someone/swin-small'):
        SwinTransformer(arch).load_pretrained('someone/swin-small')
    with pytest.raises(FileNotFoundError) as e:  # a relative file path is not taken for one
        SwinTransformer(arch).load_pretrained('work_dirs/epoch_12.pth')
    assert 'hub model id' not in str(e.value)


def test_weights_of_another_size_name_the_checkpoints_architecture():
    """Swin-S weights given to a Swin-T (CvT-21 to CvT-13, a deeper and wider ViT to a
    smaller one) were refused with a list of keys and shapes only: the error names the
    checkpoint's architecture, and its preset where one has it."""
    from mmvtx.models.backbones.cvt import CvT
    from mmvtx.models.backbones.swin import SwinTransformer
    from mmvtx.models.backbones.vit import ViT
    from mmvtx.utils.checkpoint import CheckpointMismatchError
    vit = dict(embed_dims=32, num_layers=2, num_heads=2)
    for src, model, says in (
            (SwinTransformer('small'), SwinTransformer('tiny'),
             "SwinTransformer embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24) "
             "(arch='small'); the model has embed_dims=96, depths=(2, 2, 6, 2)"),
            (CvT('21'), CvT('13'), "CvT embed_dims=(64, 192, 384), depths=(1, 4, 16) "
                                   "(arch='21'); the model has"),
            (ViT(dict(vit, embed_dims=48, num_layers=3)), ViT(vit),
             'ViT embed_dims=48, num_layers=3; the model has embed_dims=32, num_layers=2')):
        with pytest.raises(CheckpointMismatchError) as e:
            model.load_pretrained(src.state_dict())
        assert f'hint: the checkpoint is {says}' in str(e.value), str(e.value)[-600:]
    # weights of the model's own architecture say nothing of it
    with pytest.raises(CheckpointMismatchError) as e:
        ViT(vit).load_pretrained({k: v for k, v in ViT(vit).state_dict().items()
                                  if k != 'blocks.0.norm1.weight'})
    assert 'hint: the checkpoint is' not in str(e.value)


def test_a_url_that_gives_a_web_page_is_not_kept_in_the_cache(tmp_path, monkeypatch):
    """A checkpoint URL that gives a web page (the hub's /blob/ view of a file, a login wall,
    an expired link) was cached as the checkpoint: every later run read the same page from the
    cache and was told to fetch the file again, which it never did. The page is refused naming
    the URL (and /resolve/ for a /blob/ one) and removed, so the next run downloads again."""
    from safetensors.torch import save_file

    from mmvtx.models.backbones.swin import SwinTransformer
    from mmvtx.utils.checkpoint import CheckpointReadError, checkpoint_cache_dir
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    arch = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    src = SwinTransformer(arch)
    jitter_(src)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()},
              str(tmp_path / 'weights.safetensors'))
    pages = {'blob': b'<!DOCTYPE html><html>the file\'s page</html>',
             'login': b'<html>sign in</html>'}

    def download(url, dst, progress=True):  # the server, here: a page, then the file
        with open(dst, 'wb') as f:
            f.write(pages.pop('blob' if '/blob/' in url else 'login', None) or
                    (tmp_path / 'weights.safetensors').read_bytes())

    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    url = 'https://huggingface.co/someone/swin-mini/blob/main/swin_mini.safetensors'
    with pytest.raises(CheckpointReadError, match=r'(?s)gave no checkpoint file.*DOCTYPE.*'
                       r'removed from the cache.*/resolve/'):
        SwinTransformer(arch).load_pretrained(url)
    assert os.listdir(checkpoint_cache_dir()) == []
    other = 'https://example.org/files/swin_mini.pth'
    with pytest.raises(CheckpointReadError, match='sign in'):
        SwinTransformer(arch).load_pretrained(other)
    model = SwinTransformer(arch)
    model.load_pretrained(other)  # the server gives the file now: downloaded again
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
