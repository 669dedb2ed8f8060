"""Checkpoint files and state dicts, for the backbones' pretrained loading
(:meth:`mmvtx.models.backbones.base.VisionBackbone.load_pretrained`).

``load_state_dict_file`` reads ``.pth/.pt/.bin/.ckpt`` with ``torch.load(weights_only=True)``,
``.safetensors`` with safetensors, ``.npz`` without pickle and detectron2's ``.pkl`` (a pickle of
numpy arrays) with an unpickler that builds numpy arrays only; it never unpickles arbitrary
objects; a file is read as its content shows, its name deciding only where the content does
not say; a torch.save file whose records fail their CRC-32 is refused (torch.load does not
check). A folder written by transformers' ``save_pretrained`` is read through its weights file
(sharded ones, or one of their shards, through their ``*.index.json``), a hub model id through
the hub cache's folder. ``unwrap_state_dict``/``strip_prefix`` take
the weights out of their container (``state_dict``/``model``/``module.``/``backbone.``),
``detect_format`` tells a layout by its key names, ``rename_keys``/``merge_qkv`` convert names,
and ``load_converted`` copies the result into a model, naming the missing, unexpected and
mis-shaped keys if anything does not fit.
"""
import hashlib
import json
import logging
import os
import os.path as osp
import pickle
import re
import urllib.parse
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.logging import print_log
from torch import nn

CONTAINER_KEYS = ('state_dict', 'model', 'module', 'model_state', 'model_state_dict',
                  'state_dict_ema', 'model_ema')

# the update counter an averaged model (``module.`` + its weights) keeps: torch's AveragedModel,
# mmengine's averaged models
AVERAGING_COUNTERS = ('n_averaged', 'steps')


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose (converted) keys or shapes do not fit the model."""


class UnknownLayoutError(CheckpointMismatchError):
    """Weights whose key names are in none of the layouts a backbone knows
    (:func:`detect_format`)."""


class CheckpointReadError(RuntimeError):
    """A checkpoint file that cannot be read (empty, cut off, damaged, another format under
    its name, or objects that are not weights); the message names the file and why."""


@dataclass
class ConvertedCheckpoint:
    """A state dict in mmvtx naming, the source format it came from, the model keys it may
    leave out (layers that the source format does not have, e.g. per-level output norms) and,
    if it cannot fit for a known reason, what the user can do (added to the mismatch error).
    ``resized``: the tensors resampled to the model's window or grid, as the file has them (a
    whole detector converted for evaluation must not pass for one of this config)."""
    state_dict: Dict[str, torch.Tensor]
    source: str
    may_miss: Sequence[str] = field(default_factory=tuple)
    hint: str = ''
    resized: Dict[str, torch.Tensor] = field(default_factory=dict)


def checkpoint_cache_dir() -> str:
    """Where URLs of ``init_cfg`` are downloaded to and bare file names are also looked up:
    torch's hub cache, ``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch/hub/checkpoints``)."""
    return osp.join(torch.hub.get_dir(), 'checkpoints')


# the weights file of a folder written by transformers' save_pretrained, in the order
# transformers itself reads them
HF_WEIGHTS_NAMES = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
                    'pytorch_model.bin.index.json')


def url_cache_name(url: str) -> str:
    """The file name a URL's download is kept under in :func:`checkpoint_cache_dir`: its file
    name without the query (as torch.hub names it, and as a release's file name is looked up
    there); a name that every transformers model's weights share (``model.safetensors``,
    ``pytorch_model.bin``, their shards: :data:`HF_WEIGHTS_FILE`) with the URL's host and
    path before it (``huggingface.co--<owner>--<repo>--resolve--<revision>--model.safetensors``),
    and a file named by the URL's query alone (``.../uc?id=...``) with a hash of the URL, so
    that the download of one model is not taken for another's."""
    parsed = urllib.parse.urlparse(url)
    parts = [p for p in parsed.path.split('/') if p]
    name = parts[-1] if parts else parsed.netloc
    if re.match(HF_WEIGHTS_FILE, name):
        name = '--'.join(re.sub(r'[^A-Za-z0-9._-]', '_', p)
                         for p in [parsed.netloc] + parts)
    elif parsed.query and '.' not in name:
        # the file is named by the query (a file host's ``uc?id=...&export=download``): the
        # path's last part is the same for every file there
        name = f'{re.sub(r"[^A-Za-z0-9._-]", "_", name)}-' + \
            hashlib.sha256(url.encode()).hexdigest()[:16]
    return name


# one shard of a sharded save_pretrained (``model-00002-of-00004.safetensors``) and its index
HF_SHARD = re.compile(r'(model|pytorch_model)-(\d+)-of-(\d+)\.(safetensors|bin)$')


def _whole_sharded_save(path: str) -> str:
    """For one shard of transformers' sharded save (``model-00002-of-00004.safetensors``), the
    index beside it, which reads every shard: the shard alone holds part of the weights and
    was refused as a checkpoint in no known layout, or as missing most of the model's keys.
    Any other file is itself."""
    m = HF_SHARD.match(osp.basename(path))
    if m is None or int(m.group(3)) < 2:
        return path
    index = osp.join(osp.dirname(path), f'{m.group(1)}.{m.group(4)}.index.json')
    if osp.isfile(index):
        print_log(f'{path} is shard {int(m.group(2))} of {int(m.group(3))} of a sharded save: '
                  f'reading them all through {osp.basename(index)}', logger='current',
                  level=logging.INFO)
        return index
    raise CheckpointReadError(
        f'{path} is shard {int(m.group(2))} of {int(m.group(3))} of a sharded save, which holds '
        f'part of the weights only, and {osp.basename(index)}, which names them all, is not '
        'beside it: fetch the index and every shard into that folder and give the folder')


def _check_download(url: str, local: str):
    """Refuses, and removes from the cache, a download whose bytes are no checkpoint's (a web
    page: a login wall, an expired link, a file's web view such as the hub's ``/blob/`` URL):
    kept, it was read again on every run and refused as a file to fetch again, which the
    cache never did."""
    if local.endswith('.index.json'):  # a sharded save's index: JSON
        return
    with open(local, 'rb') as f:
        head = f.read(64)
    if head.startswith((b'PK',) + PICKLE_STARTS) or _content_format(local) is not None:
        return
    try:
        os.remove(local)
    except FileNotFoundError:  # another process of the run removed it first
        pass
    web_view = ''
    if '/blob/' in urllib.parse.urlparse(url).path:
        web_view = (': a /blob/ URL is the file\'s web page; its download URL has /resolve/ '
                    '(huggingface.co) or /raw/ (github.com) in place of /blob/')
    raise CheckpointReadError(
        f'{url} gave no checkpoint file: its bytes begin {head[:40]!r} (a web page: a login, '
        f'an expired link, a web view of the file?). The download was removed from the cache '
        f'({local}); give the file\'s direct download URL{web_view}')


def resolve_checkpoint_path(path: str) -> str:
    """A local file for ``path``: a URL is downloaded once into :func:`checkpoint_cache_dir`; a
    bare file name not in the working directory is looked up there too; a folder of
    transformers' ``save_pretrained`` gives its weights file (:data:`HF_WEIGHTS_NAMES`), as
    does a Hugging Face hub model id (``microsoft/swin-tiny-patch4-window7-224``) downloaded in
    the hub's cache (:func:`hub_snapshot`)."""
    path = os.fspath(path)  # a pathlib.Path too
    if path.startswith(('http://', 'https://')):
        # downloaded once into torch's hub cache, then read like a local file (never unpickled)
        cache = checkpoint_cache_dir()
        os.makedirs(cache, exist_ok=True)
        local = osp.join(cache, url_cache_name(path))
        if not osp.exists(local):
            torch.hub.download_url_to_file(path, local, progress=True)
        _check_download(path, local)
        return local
    path = osp.expanduser(path)
    if osp.isfile(path):
        return _whole_sharded_save(path)
    if osp.isdir(path):
        for name in HF_WEIGHTS_NAMES:
            if osp.isfile(osp.join(path, name)):
                return osp.join(path, name)
        broken = [n for n in HF_WEIGHTS_NAMES if osp.islink(osp.join(path, n))]
        if broken:  # a hub snapshot whose blob is absent (an interrupted download)
            link = osp.join(path, broken[0])
            raise FileNotFoundError(
                f'{link} is a link to {os.readlink(link)}, which does not exist (a hub '
                'snapshot whose download was interrupted or whose blobs were deleted?): '
                'download the model again')
        raise FileNotFoundError(
            f'{path} is a folder, not a checkpoint file, and holds none of the weights files '
            f'transformers\' save_pretrained writes ({", ".join(HF_WEIGHTS_NAMES)}); its '
            f'entries: {", ".join(sorted(os.listdir(path))[:20]) or "none"}. Name the '
            'checkpoint file itself.')
    cached = osp.join(checkpoint_cache_dir(), path)
    if osp.dirname(path) == '' and osp.isfile(cached):
        # a release published without a direct URL (e.g. the CvT authors'), named by its file
        # name in a config and put into the hub cache by hand
        return cached
    hub_id = HUB_ID.match(path) is not None
    if hub_id:  # a model of the Hugging Face hub, as transformers' from_pretrained names it
        snapshot = hub_snapshot(path)
        if snapshot is not None:
            print_log(f'{path}: the Hugging Face hub model downloaded in {snapshot}',
                      logger='current', level=logging.INFO)
            return resolve_checkpoint_path(snapshot)
    where = path if osp.dirname(path) else f'{path} (looked in {os.getcwd()} and {cached})'
    hint = ''
    if hub_id and osp.splitext(path)[1].lower() not in CHECKPOINT_EXTENSIONS:
        hint = (f' (a Hugging Face hub model id? It is not downloaded in the hub cache, '
                f'{hf_hub_cache_dir()}: download it first, e.g. huggingface-cli download {path}, '
                'or give the folder or file of the weights)')
    raise FileNotFoundError(f'checkpoint not found: {where}{hint}')


# a model id of the Hugging Face hub (``owner/name``), as transformers' from_pretrained takes it
HUB_ID = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$')
CHECKPOINT_EXTENSIONS = ('.pth', '.pt', '.bin', '.ckpt', '.safetensors', '.npz', '.pkl', '.tar')


def hf_hub_cache_dir() -> str:
    """Where huggingface_hub (transformers' from_pretrained) keeps its downloads, as it decides:
    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub`` (``~/.cache/huggingface/hub``)."""
    cache = os.environ.get('HF_HUB_CACHE') or os.environ.get('HUGGINGFACE_HUB_CACHE')
    if cache:
        return osp.expanduser(cache)
    home = os.environ.get('HF_HOME') or osp.join(
        os.environ.get('XDG_CACHE_HOME') or osp.join('~', '.cache'), 'huggingface')
    return osp.join(osp.expanduser(home), 'hub')


def hub_snapshot(repo_id: str) -> Optional[str]:
    """The folder of hub model ``repo_id``'s revision ``main`` (or its only revision) in
    :func:`hf_hub_cache_dir`, where transformers has downloaded it, or None."""
    repo = osp.join(hf_hub_cache_dir(), 'models--' + repo_id.replace('/', '--'))
    snapshots = osp.join(repo, 'snapshots')
    if not osp.isdir(snapshots):
        return None
    try:
        with open(osp.join(repo, 'refs', 'main')) as f:
            commit = f.read().strip()
    except OSError:
        commit = ''
    if commit and osp.isdir(osp.join(snapshots, commit)):
        return osp.join(snapshots, commit)
    found = os.listdir(snapshots)
    return osp.join(snapshots, found[0]) if len(found) == 1 else None


# the names of the weights files save_pretrained writes (sharded ones and their index
# included; a download saved by wget may end in ``?download=true``)
HF_WEIGHTS_FILE = r'(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?($|\?)'

# where transformers' composite models keep the config of their image encoder (SAM's
# ``vision_config``, UperNet's ``backbone_config``)
NESTED_CONFIG_KEYS = ('vision_config', 'backbone_config')


def source_config(path: str, model_types: Sequence[str]) -> Optional[dict]:
    """The architecture transformers' ``save_pretrained`` writes beside the weights
    (``config.json`` in the weights file's folder), or its image encoder's part, when its
    ``model_type`` is one of ``model_types``; None where there is no such file (timm, mmdet,
    mmseg and the authors' releases keep no architecture beside their weights). Only a file
    named as transformers names its weights (:data:`HF_WEIGHTS_FILE`) is described by it: a
    file of another name in that folder (a timm or converted file kept beside a download) is
    not."""
    if not re.match(HF_WEIGHTS_FILE, osp.basename(path)):
        return None
    name = osp.join(osp.dirname(osp.abspath(path)), 'config.json')
    if not osp.isfile(name):
        return None
    try:
        with open(name) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None  # not transformers' file: nothing to compare with
    if not isinstance(config, dict):
        return None
    for part in (config, *(config.get(k) for k in NESTED_CONFIG_KEYS)):
        if isinstance(part, dict) and part.get('model_type') in model_types:
            return part
    return None


def _read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path)
    except SafetensorError as e:
        raise CheckpointReadError(f'{path} is not a valid .safetensors file (truncated, or '
                                  f'another format under that name?): {e}') from e


def _read_npz(path: str) -> Dict[str, torch.Tensor]:
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError('it holds a single .npy array, not named arrays')
        with npz:
            return {k: torch.from_numpy(npz[k].copy()) for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointReadError(f'{path} is not a valid .npz file (truncated, or another '
                                  f'format under that name?): {e}') from e


def _read_sharded(path: str) -> Dict[str, torch.Tensor]:
    """The weights of a sharded save (transformers' ``*.index.json``: ``weight_map`` names the
    shard, beside the index, that holds each tensor), every shard read as a checkpoint file."""
    try:
        with open(path) as f:
            shards = sorted(set(json.load(f)['weight_map'].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointReadError(f'{path} is not a valid sharded-checkpoint index (a JSON '
                                  'file with a "weight_map" of tensor name -> shard file): '
                                  f'{e!r}') from e
    sd = {}
    for shard in shards:
        sd.update(_read_file(osp.join(osp.dirname(path), shard)))
    return sd


# what a pickle of numpy arrays (detectron2's model-zoo ``.pkl`` files: ``{'model': {name:
# ndarray}, '__author__': ...}``) may name: numpy's array reconstruction and nothing else
# (protocol 2 writes an array's bytes through ``_codecs.encode``, a str -> bytes conversion;
# protocol 5, Python 3.14's default, an array as ``_frombuffer(bytes, dtype, shape, order)``)
NUMPY_PICKLE_GLOBALS = {
    (module, name) for module in ('numpy.core.multiarray', 'numpy._core.multiarray')
    for name in ('_reconstruct', 'scalar')} | {
        (module, '_frombuffer') for module in ('numpy.core.numeric', 'numpy._core.numeric')} | {
        ('numpy', 'ndarray'), ('numpy', 'dtype'), ('collections', 'OrderedDict'),
        ('_codecs', 'encode')}


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in dicts and lists; any other object the pickle would build
    (a function to call, a class) is refused, naming it, before anything runs."""

    def find_class(self, module, name):
        if (module, name) in NUMPY_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'it would build {module}.{name}, which is not a numpy array')


def _numpy_to_torch(obj, name: str = ''):
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:  # Python objects, not numbers: no tensor holds them
            raise pickle.UnpicklingError(f'{name or "an entry"} is an array of Python objects '
                                         f'(dtype {obj.dtype}), not of numbers')
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: _numpy_to_torch(v, f'{name}/{k}' if name else str(k))
                for k, v in obj.items()}
    return obj


# how a pickle of a dict begins: protocol 2+ with its PROTO opcode; Python 2's cPickle default,
# protocol 0 (``(dp0``, an OrderedDict's ``ccollections``), and protocol 1 (``}q``) without one
PICKLE_STARTS = (b'\x80', b'(dp', b'}', b'ccollections\nOrderedDict\n')


def _read_numpy_pickle(path: str):
    """A pickle of numpy arrays (detectron2's ``.pkl`` releases, Python 2 ones included), read
    without building any other object; the arrays become tensors."""
    with open(path, 'rb') as f:
        return _numpy_to_torch(_NumpyUnpickler(f, encoding='latin1').load())


def _content_format(path: str) -> Optional[str]:
    """The format a file's first bytes show, whatever its name (``model.safetensors?download=
    true`` as wget saves a hub URL, a hub cache blob, a safetensors file named ``.bin``):
    ``'safetensors'`` (an 8-byte header length, then the JSON header), ``'npz'`` (a zip of
    ``.npy`` arrays) or ``'torch'`` (torch.save's zip archive); None when they show none of
    these (damaged, or an older format): the file is then read by its name."""
    with open(path, 'rb') as f:
        head = f.read(9)
    if head[:4] == b'PK\x03\x04':
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        if names and all(n.endswith('.npy') for n in names):
            return 'npz'
        return 'torch' if any(n.endswith('/data.pkl') for n in names) else None
    if len(head) == 9 and head[8:] == b'{' and \
            int.from_bytes(head[:8], 'little') <= osp.getsize(path) - 8:
        return 'safetensors'
    return None


# what a file torch.load(weights_only=True) cannot read is told
NO_UNPICKLING = ('mmvtx never unpickles arbitrary objects. Save the bare state dict '
                 '(torch.save(model.state_dict(), ...)) or convert it with '
                 'tools/model_converters/*2mmvtx.py.')


# the first object torch.save's legacy (pickle) format writes
LEGACY_TORCH_MAGIC = 0x1950a86a20f9469cfc6c


def _why_unreadable(error: Exception) -> str:
    """What to do about a file torch.load(weights_only=True) refused: objects other than
    weights (its allow-list named them), or a damaged file (cut off, corrupted)."""
    if 'weights only load failed' in str(error).lower():
        return NO_UNPICKLING
    return ('The file is damaged or incomplete (cut off by an interrupted download or copy?): '
            'fetch it again.')


def damaged_zip_record(path: str) -> Optional[str]:
    """The first record of a torch.save file (a zip archive) that fails its CRC-32 check, or
    None. ``torch.load`` does not check them: bytes damaged after the file was written (a
    segmented download that left a hole of zeros, a bad copy or disk) were loaded as weights
    without a word. A record whose stored checksum is 0 is not checked (torch's
    ``serialization.config.save.compute_crc32 = False`` writes 0 for every record); nor is a
    file that is no readable zip archive (cut off, or a damaged directory: torch.load names
    it)."""
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.CRC == 0:  # written without a checksum
                    continue
                try:
                    with z.open(info) as f:  # zipfile checks the CRC-32 at the end
                        while f.read(1 << 24):
                            pass
                except (zipfile.BadZipFile, zlib.error, EOFError):
                    return info.filename
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    return None


# what to say of a file whose record fails its checksum (:func:`damaged_zip_record`)
DAMAGED_RECORD = ('its record {record!r} fails the CRC-32 check torch.save wrote for it, so '
                  'its bytes are not those that were saved (torch.load does not check, and '
                  'would load them as weights). The file was corrupted after it was written '
                  '(an interrupted or segmented download, a bad copy or disk?)')


def _check_zip_records(path: str):
    """Refuses a torch.save file whose records fail their checksum (:func:`damaged_zip_record`),
    naming the file and the record."""
    bad = damaged_zip_record(path)
    if bad is not None:
        raise CheckpointReadError(f'{path} is damaged: ' + DAMAGED_RECORD.format(record=bad) +
                                  ': fetch it again.')


def load_state_dict_file(path: str, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` dict from a checkpoint file, without unpickling objects.
    A file that cannot be read (empty, truncated, damaged, another format) raises
    :class:`CheckpointReadError` (a ``RuntimeError``) naming it."""
    return _read_file(resolve_checkpoint_path(path), prefix)


def _read_file(path: str, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """:func:`load_state_dict_file` of a local file (a shard of a sharded save: that shard)."""
    if not osp.isfile(path):  # a shard the index names
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if osp.getsize(path) == 0:
        raise CheckpointReadError(f'{path} is empty (0 bytes), not a checkpoint: an '
                                  'interrupted download or copy? Fetch it again.')
    content = None if path.endswith('.index.json') else _content_format(path)
    fmt = 'index' if path.endswith('.index.json') else content or (
        'safetensors' if path.endswith('.safetensors') else
        'npz' if path.endswith('.npz') else 'torch')
    if content == 'torch':
        _check_zip_records(path)
    if fmt == 'index':
        ckpt = _read_sharded(path)
    elif fmt == 'safetensors':
        ckpt = _read_safetensors(path)
    elif fmt == 'npz':
        ckpt = _read_npz(path)
    else:
        # a training checkpoint's message hub (mmengine's HistoryBuffer, numpy values) is read
        # through the exact allow-list of --resume, for this load only
        from mmvtx.engine.safe_load import mmengine_checkpoint_globals
        try:
            # a file object: torch.load would hand a path named .safetensors to safetensors
            with mmengine_checkpoint_globals(), open(path, 'rb') as f:
                ckpt = torch.load(f, map_location='cpu', weights_only=True)
        except Exception as e:  # noqa: BLE001 - re-raised with what a user needs
            with open(path, 'rb') as f:
                head = f.read(16)
            torch_error = str(e) or type(e).__name__
            if head.startswith(PICKLE_STARTS) and not zipfile.is_zipfile(path):
                # a plain pickle: detectron2's .pkl releases hold numpy arrays; torch.save's
                # legacy format (torch < 1.6, or _use_new_zipfile_serialization=False, as
                # mmdet 2.x / mmseg 0.x published their models) is a pickle too
                try:
                    ckpt = _read_numpy_pickle(path)
                except Exception as numpy_error:  # noqa: BLE001 - reported with torch's
                    raise CheckpointReadError(
                        f'{path} could not be read with torch.load(weights_only=True) '
                        f'({torch_error}) nor as a pickle of numpy arrays '
                        f'(detectron2\'s .pkl): {numpy_error}\n'
                        + _why_unreadable(e)) from e
                if not isinstance(ckpt, dict):  # the legacy format's magic number, first
                    legacy = isinstance(ckpt, int) and ckpt == LEGACY_TORCH_MAGIC
                    raise CheckpointReadError(
                        f'{path} could not be read with torch.load(weights_only=True): '
                        f'{torch_error}\n' + (
                            'It is a torch.save file of the legacy format (torch < 1.6, or '
                            '_use_new_zipfile_serialization=False). ' if legacy else
                            f'It is a pickle of a {type(ckpt).__name__}, not of a dict of '
                            'weights. ') + _why_unreadable(e)) from e
                return unwrap_state_dict(ckpt, origin=path, prefix=prefix)
            if not head.startswith((b'PK',) + PICKLE_STARTS):  # neither a zip nor a pickle
                raise CheckpointReadError(
                    f'{path} is not a checkpoint file: its bytes are none of torch.save\'s '
                    f'formats, safetensors or .npz (it begins {head!r}); a web page or an '
                    'error message saved in its place? Fetch the file again.') from e
            raise CheckpointReadError(
                f'{path} could not be read with torch.load(weights_only=True): '
                f'{torch_error}\n' + _why_unreadable(e)) from e
    return unwrap_state_dict(ckpt, origin=path, prefix=prefix)


def _count_tensors(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return 1
    if isinstance(obj, dict):
        return sum(_count_tensors(v) for v in obj.values())
    return 0


# entries of a training checkpoint that hold the averaged (EMA) network a method's authors
# evaluate beside the one they train: I-JEPA's and ViT-MSN's target encoder, DINO's teacher
EVALUATED_ENTRIES = ('target_encoder', 'teacher', 'model_ema', 'ema', 'state_dict_ema')


def unwrap_state_dict(ckpt, origin: str = '', prefix: Optional[str] = None
                      ) -> Dict[str, torch.Tensor]:
    """Takes the weights out of training checkpoints (``{'state_dict': ...}``, ``{'model': ...}``)
    and strips DataParallel's ``module.`` prefix (an averaged model's too, without its update
    counter). A checkpoint holding no tensor there (its
    weights under another name, or none) raises :class:`CheckpointMismatchError` naming its
    entries, unless ``prefix`` begins with the name of the entry that holds them (DINOv2's
    ``teacher_checkpoint.pth``: ``prefix='teacher.backbone.'``): that entry's tensors are
    returned under their full names."""
    where = []
    while isinstance(ckpt, dict):
        key = next((k for k in CONTAINER_KEYS if isinstance(ckpt.get(k), dict)), None)
        if key is None:
            break
        ckpt = ckpt[key]
        where.append(repr(key))
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(f'expected a state dict, got {type(ckpt).__name__}')
    sd = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    entry = prefix.split('.', 1)[0] if prefix else None
    if not sd and isinstance(ckpt.get(entry), dict) and _count_tensors(ckpt[entry]):
        # the entry the prefix names, under its name (strip_prefix then takes the prefix)
        return {f'{entry}.{k}': v for k, v in unwrap_state_dict(
            ckpt[entry], origin, prefix.split('.', 1)[1] if '.' in prefix else None).items()}
    if not sd:
        holders = [k for k, v in ckpt.items() if isinstance(v, dict) and _count_tensors(v)]
        entries = [f'{k} ({type(v).__name__}' + (f' holding {_count_tensors(v)} tensors)'
                                                 if isinstance(v, dict) else ')')
                   for k, v in list(ckpt.items())[:20]]
        inside = f' under {"/".join(where)}' if where else ''
        example = ''
        if holders:  # an entry (DINOv2's 'teacher') holds them: its backbone if it has one
            # the averaged network the authors evaluate first (I-JEPA's and MSN's
            # target_encoder beside the encoder they train, DINO's teacher, an EMA)
            holders.sort(key=lambda k: k not in EVALUATED_ENTRIES)
            backbone = any(str(k).startswith('backbone.') for k in ckpt[holders[0]])
            example = (", or name the entry with init_cfg's prefix (load_pretrained's "
                       f"prefix=), e.g. prefix='{holders[0]}.{'backbone.' if backbone else ''}'"
                       + (' (the averaged network its authors evaluate)'
                          if holders[0] in EVALUATED_ENTRIES else ''))
        raise CheckpointMismatchError(
            f'{origin or "the checkpoint"} holds no tensors{inside}, so no weights to load; '
            f'its entries: {", ".join(entries) or "none"}. Save the weights on their own '
            f'(e.g. torch.save(ckpt[name], ...) for the entry that holds them){example}.')
    # DataParallel's module. prefix; an averaged model (torch's AveragedModel for SWA/EMA,
    # mmengine's ExponentialMovingAverage) also holds its update counter beside the weights
    counters = [k for k in AVERAGING_COUNTERS if k in sd and sd[k].numel() == 1]
    if any(k.startswith('module.') for k in sd) and all(
            k.startswith('module.') or k in counters for k in sd):
        sd = {k[len('module.'):]: v for k, v in sd.items() if k not in counters}
    return sd


# the network a self-distillation checkpoint (DINO, DINOv2: a student and its EMA teacher)
# is evaluated and released with
DISTILLED_PREFIX = 'teacher.backbone.'


def backbone_prefix(sd: Dict[str, torch.Tensor]) -> str:
    """Where a whole model's checkpoint keeps its backbone: ``backbone.`` (mmdet, mmseg,
    mmpretrain, transformers' UperNet), or the same under a wrapper (PyTorch Lightning's
    ``model.backbone.``, ...); of a DINO/DINOv2 training checkpoint's student and teacher, the
    teacher, as the authors evaluate; ``''`` for a backbone's own weights. Several backbones
    beside each other otherwise are refused naming them."""
    if any(k.startswith('backbone.') for k in sd):
        return 'backbone.'
    # a hybrid ViT's own ResNet stem (:data:`HYBRID_STEM`) is part of the network, not a whole
    # model's backbone
    found = sorted({k[:k.index('.backbone.') + len('.backbone.')] for k in sd
                    if '.backbone.' in k and not HYBRID_STEM.search(k)})
    if len(found) <= 1:
        return found[0] if found else ''
    if DISTILLED_PREFIX in found:
        return DISTILLED_PREFIX
    raise CheckpointMismatchError(
        f'the checkpoint holds several backbones ({", ".join(found)}): name the one to load '
        "with init_cfg's prefix (or load_pretrained's prefix=), e.g. "
        f"prefix='{found[0]}'")


def strip_prefix(sd: Dict[str, torch.Tensor], prefix: Optional[str],
                 origin: str = '') -> Dict[str, torch.Tensor]:
    """Keeps the keys under ``prefix`` (without it). ``None``: a whole detector/segmentor or
    classifier checkpoint is cut down to its backbone automatically (:func:`backbone_prefix`)."""
    if prefix is None:
        prefix = backbone_prefix(sd)
        if prefix not in ('', 'backbone.'):
            print_log(f'{origin or "the checkpoint"}: loading the weights under {prefix!r}',
                      logger='current', level=logging.INFO)
    if not prefix:
        return sd
    if not prefix.endswith('.'):
        prefix += '.'
    out = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not out:
        raise CheckpointMismatchError(f'no key of the checkpoint starts with {prefix!r}')
    return out


def mismatch_lines(missing, unexpected, mis_shaped) -> list:
    """One line per kind of difference between a checkpoint and a model (none if it fits),
    each naming up to 40 keys."""
    lines = []
    for title, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                        ('shape mismatches', mis_shaped)):
        if keys:
            lines.append(f'  {title} ({len(keys)}): ' + ', '.join(keys[:40]) +
                         (' ...' if len(keys) > 40 else ''))
    return lines


def load_converted(model: nn.Module, converted: ConvertedCheckpoint, strict: bool = True,
                   origin: str = ''):
    """Copies ``converted`` into ``model``; raises :class:`CheckpointMismatchError` naming every
    key that is missing (other than ``may_miss``), unexpected or of another shape."""
    own = model.state_dict()
    sd = converted.state_dict
    missing = [k for k in own if k not in sd]
    allowed = [k for k in missing
               if any(k == m or k.startswith(m + '.') for m in converted.may_miss)]
    missing = [k for k in missing if k not in allowed]
    unexpected = [k for k in sd if k not in own]
    mis_shaped = [f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in sd if k in own and sd[k].shape != own[k].shape]
    name = type(model).__name__
    lines = mismatch_lines(missing, unexpected, mis_shaped)
    if strict and lines:
        raise CheckpointMismatchError('\n'.join(
            [f'{name}: the {converted.source} checkpoint does not fit the model.'] + lines +
            ([converted.hint] if converted.hint else [])))
    copied = 0
    with torch.no_grad():
        for k, v in sd.items():
            if k in own and own[k].shape == v.shape:
                own[k].copy_(v.to(own[k].dtype))
                copied += 1
    if '_settings' in model.__dict__:  # a backbone's checkpoint-chosen settings (buffers)
        model.apply_recorded_settings(sd)  # compute with what the converter recorded
    article = 'an' if converted.source[:1].lower() in 'aeio' or converted.source[:2] == 'mm' \
        else 'a'  # 'an official', 'an mmdet'
    msg = f'{name}: loaded {copied} tensors from {article} {converted.source} checkpoint'
    if origin:
        msg += f' ({origin})'
    if allowed:
        msg += f'; not in that format, kept at their init: {", ".join(sorted(allowed))}'
    if converted.resized:  # e.g. a window-12 release fine-tuned with window 7: named
        k, v = sorted(converted.resized.items())[0]
        msg += (f'; {len(converted.resized)} tensor(s) of another window or grid size '
                f'resampled to the model\'s (e.g. {k}: {tuple(v.shape)} -> '
                f'{tuple(own[k].shape) if k in own else "?"})')
    print_log(msg, logger='current')
    if lines:  # strict=False: say what was not loaded
        print_log('\n'.join([f'{name}: strict=False, so these were skipped (the model keeps '
                              'its init there):'] + lines), logger='current',
                  level=logging.WARNING)


def check_finite(sd: Dict[str, torch.Tensor], origin: str = ''):
    """Raises :class:`CheckpointMismatchError` naming every floating-point tensor of ``sd`` that
    holds NaN or infinite values (a diverged or corrupted run's weights)."""
    bad = []
    for k, v in sd.items():
        if v.is_floating_point() or v.is_complex():
            n = v.numel() - int(torch.isfinite(v).sum())
            if n:
                bad.append(f'{k} ({n} of {v.numel()})')
    if bad:
        raise CheckpointMismatchError(
            f'{origin or "the checkpoint"} holds non-finite values (NaN/inf) in {len(bad)} '
            f'tensor(s): ' + ', '.join(bad[:20]) + (' ...' if len(bad) > 20 else '') +
            '\nIt was probably saved after training diverged. To load it anyway, set '
            "allow_nonfinite=True in init_cfg=dict(type='Pretrained', ...).")


def read_checkpoint(checkpoint, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` dict from a checkpoint file path or an in-memory checkpoint
    (``prefix``: see :func:`unwrap_state_dict`)."""
    if isinstance(checkpoint, os.PathLike):  # a pathlib.Path
        checkpoint = os.fspath(checkpoint)
    if isinstance(checkpoint, str):
        return load_state_dict_file(checkpoint, prefix)
    return unwrap_state_dict(checkpoint, prefix=prefix)


def load_backbone_checkpoint(model: nn.Module, checkpoint, prefix: Optional[str] = None,
                             strict: bool = True,
                             allow_nonfinite: bool = False) -> ConvertedCheckpoint:
    """``model.load_pretrained(...)``: loads a file path (or an in-memory state dict) of any
    layout the backbone's ``convert_state_dict`` knows; returns what was loaded."""
    return model.load_pretrained(checkpoint, prefix=prefix, strict=strict,
                                 allow_nonfinite=allow_nonfinite)


@dataclass(frozen=True)
class KeyRule:
    """A checkpoint is in layout ``layout`` if one of its keys starts with one of ``prefixes``
    (any key when empty) and contains every string of ``contains``."""
    layout: str
    prefixes: Tuple[str, ...] = ()
    contains: Tuple[str, ...] = ()

    def matches(self, key: str) -> bool:
        return ((not self.prefixes or key.startswith(self.prefixes))
                and all(c in key for c in self.contains))


# what tells the weights of each backbone family apart in every layout it is released in
# (the authors', timm, transformers, mmdet/mmseg/mmpretrain, mmvtx), checked in this order: a
# Swin block's attention is named like a ViT's (attn.qkv), but only Swin nests blocks in stages
# with relative position bias tables; CvT's convolutional projections are its own
BACKBONE_FAMILIES = (
    ('SwinTransformer', 'a Swin Transformer',
     re.compile(r'(^|\.)(layers|stages)\.\d+\.blocks\.\d+\..*relative_position_bias_table$')),
    ('CvT', 'a CvT', re.compile(r'(conv_proj_q|convolution_projection_query)\.')),
    ('ViT', 'a ViT', re.compile(
        r'(^|\.)(blocks|layer|layers)\.(\d+\.)?\d+\.(attn\.(qkv|q_bias|attn\.in_proj)|'
        r'attention\.(qkv|attention\.query|q_proj)|mlp\.lin1|layer_norm1)')),
)


# a hybrid ViT's ResNet stem: timm's patch_embed.backbone., transformers ViTHybrid's
# embeddings.patch_embeddings.backbone. and DPT-hybrid's embeddings.backbone.
HYBRID_STEM = re.compile(r'(^|\.)(patch_embed|patch_embeddings|embeddings)\.backbone\.')

# architectures that no mmvtx backbone computes, told by layers of their own; checked before
# :data:`BACKBONE_FAMILIES` (Swin V2's blocks hold no bias table, and its attention is named
# like a ViT's; BEiT's blocks hold a LayerScale as DeiT-III's and a bias table as Swin's), in
# this order, in every layout the family is released in (the authors', timm, transformers 4.x
# as on the hub and 5.x, mmpretrain/mmseg/mmdet, big_vision/open_clip): ``(what it is, a
# pattern of its keys, what differs)``
# a key outside Swin's stage.block nesting
_NOT_SWIN = r'^(?!.*(layers|stages)\.\d+\.blocks\.\d+\.)'
UNSUPPORTED_FAMILIES = (
    ('a Swin Transformer V2', re.compile(r'\.(cpb_mlp|continuous_position_bias_mlp)\.'),
     "its scaled cosine attention (a learned logit_scale), continuous relative position bias "
     "(an MLP, cpb_mlp, where Swin V1 learns a table) and post-norm blocks are not Swin V1's, "
     "which mmvtx's SwinTransformer is"),
    # timm/authors blocks.N.attn., mmpretrain/mmseg layers.N.attn., shared rel_pos_bias.;
    # transformers 4.x ...attention.attention.relative_position_bias. and encoder.relative_
    # position_bias. (shared), 5.x layers.N.relative_position_bias. and shared_position_bias.
    ('a BEiT (BEiT, BEiT v2 or data2vec vision)', re.compile(
        _NOT_SWIN + r'(.*\.)?((blocks|layers)\.\d+\.attn\.|(rel_pos_bias|relative_position_bias|'
        r'shared_position_bias)\.)relative_position_bias_table$'),
     "its attention adds a learned relative position bias table over the whole token grid "
     "(relative_position_bias_table, per block or shared by all), which mmvtx's ViT does not "
     "compute (ViTDet's decomposed relative positions are another parametrisation)"),
    ('a CLIP image encoder', re.compile(
        r'(^|\.)(ln_pre|pre_layrnorm|pre_layernorm|norm_pre)\.weight$'),
     "its LayerNorm on the embedded tokens before the first block (ln_pre / pre_layrnorm / "
     "norm_pre; OpenAI's release also computes QuickGELU and has no patch-embedding bias) is "
     "not in mmvtx's ViT"),
    ('an AIMv2 image encoder', re.compile(r'(^|\.)(rms_norm1|embeddings\.rms_norm)\.weight$'),
     "its RMSNorm layers and bias-free SwiGLU blocks are not mmvtx's ViT's LayerNorm blocks"),
    # EVA-02: the authors' mlp.ffn_ln / attn.inner_attn_ln, timm's fc1_g/fc1_x, the rotary
    # tables the authors and mmpretrain (ViTEVA02, whose small sizes have no inner norm) keep
    ('an EVA-02', re.compile(r'(^|\.)(mlp\.(ffn_ln|fc1_g|fc1_x)|attn\.inner_attn_ln)\.|'
                             r'(^|\.)rope\.freqs_(cos|sin)$'),
     "its SwiGLU with a LayerNorm inside (ffn_ln), the LayerNorm inside its attention "
     "(sub-LN) and its rotary position embedding beside the [CLS] token are not mmvtx's ViT's"),
    # timm/authors blocks.N.proj, transformers encoder.stages.N.layers.M.proj
    ('a Hiera', re.compile(r'(^|\.)(blocks|layers)\.\d+\.proj\.weight$'),
     "a hierarchical ViT: mask-unit attention with pooled queries and a channel projection "
     "(proj) where a stage begins, which mmvtx's ViT and Swin do not compute"),
    # timm/authors/mmdet ViT-R50 and transformers ViTHybrid/DPT-hybrid: a ResNet (BiT) stem as
    # the patch embedding
    ('a hybrid ViT (ViT-R50)', HYBRID_STEM,
     "its patch embedding is a ResNet (BiT) stem's feature map, not a convolution of the "
     "image's patches as mmvtx's ViT's is"),
    ('a FocalNet', re.compile(r'(^|\.)modulation\.focal_layers\.'),
     "focal modulation takes the place of self-attention: not a network mmvtx computes"),
    # mmdet/mmseg attn.sr, transformers Segformer attention.self.sr, PVT sequence_reduction,
    # PVTv2 spatial_reduction
    ('a spatial-reduction transformer (PVT, SegFormer MiT, Twins)', re.compile(
        r'(^|\.)(attn|attention(\.self)?)\.(sr|sequence_reduction|spatial_reduction)\.weight$'),
     "its spatial-reduction attention (keys and values from a strided convolution of the "
     "map) is not a network mmvtx computes"),
    # the authors' stages.N.M.dwconv, timm stages.N.blocks.M.conv_dw, mmpretrain/mmdet
    # stages.N.M.depthwise_conv, transformers encoder.stages.N.layers.M.dwconv
    ('a ConvNeXt', re.compile(r'(^|\.)stages\.\d+\.((blocks|layers)\.)?\d+\.'
                              r'(dwconv|conv_dw|depthwise_conv)\.weight$'),
     "a convolutional network (depthwise 7x7 convolutions, no attention), not a vision "
     "transformer"),
    # torchvision/mmdet/timm layer1..4, transformers ResNetModel's stages
    ('a ResNet', re.compile(r'(^|\.)layer[1-4]\.\d+\.conv1\.weight$|(^|\.)encoder\.stages\.'
                            r'\d+\.layers\.\d+\.layer\.\d+\.convolution\.weight$'),
     "a convolutional network, not a vision transformer"),
)


def unsupported_family(sd: Dict[str, torch.Tensor]) -> Optional[Tuple[str, str, str]]:
    """``(what it is, a key that shows it, what differs)`` where ``sd`` holds the weights of an
    architecture of :data:`UNSUPPORTED_FAMILIES`, or None."""
    for what, pattern, why in UNSUPPORTED_FAMILIES:
        key = next((k for k in sd if pattern.search(k)), None)
        if key is not None:
            return what, key, why
    return None


def backbone_family(sd: Dict[str, torch.Tensor]) -> Optional[Tuple[str, str, str]]:
    """``(mmvtx type, what it is, a key that shows it)`` of the backbone family whose weights
    ``sd`` holds (:data:`BACKBONE_FAMILIES`), or None where no key shows one."""
    for family, what, pattern in BACKBONE_FAMILIES:
        key = next((k for k in sd if pattern.search(k)), None)
        if key is not None:
            return family, what, key
    return None


def detect_format(sd: Dict[str, torch.Tensor], rules: Sequence[KeyRule], what: str,
                  known: str) -> str:
    """The layout of the first rule that one of ``sd``'s keys matches; otherwise a
    :class:`CheckpointMismatchError` naming ``what`` the model is, the ``known`` layouts and the
    checkpoint's first keys."""
    for rule in rules:
        if any(rule.matches(k) for k in sd):
            return rule.layout
    raise UnknownLayoutError(f'not a {what} checkpoint in a known format ({known}); '
                             'first keys: ' + ', '.join(sorted(sd)[:8]))


def nested_layouts(sd: Dict[str, torch.Tensor], rules: Sequence[KeyRule]) -> list:
    """``(prefix, layout)`` for each place below the top level of ``sd`` where the keys begin
    as a layout of ``rules`` does (a rule with ``prefixes``): a model that keeps its image
    encoder under a name of its own (transformers' Mask2Former/MaskFormer
    ``model.pixel_level_module.encoder.``, a PyTorch Lightning module's ``model.``). The
    outermost of nested candidates only (``model.`` holding ``vit.embeddings``, not
    ``model.vit.``)."""
    starts = tuple(p for rule in rules for p in rule.prefixes)
    candidates = set()
    for k in sd:
        for start in starts:
            i = k.find('.' + start)
            while i >= 0:
                candidates.add(k[:i + 1])
                i = k.find('.' + start, i + 1)
    found = []
    for prefix in sorted(candidates, key=len):
        if any(prefix.startswith(p) for p, _ in found):
            continue
        sub = [k[len(prefix):] for k in sd if k.startswith(prefix)]
        layout = next((rule.layout for rule in rules if any(rule.matches(k) for k in sub)),
                      None)
        if layout is not None:
            found.append((prefix, layout))
    return found


def rename_keys(sd: Dict[str, torch.Tensor], rules: Sequence) -> Dict[str, torch.Tensor]:
    """Applies ``(old, new)`` substring replacements, in order, to every key."""
    out = {}
    for k, v in sd.items():
        for old, new in rules:
            k = k.replace(old, new)
        out[k] = v
    return out


def merge_qkv(sd: Dict[str, torch.Tensor], parts: Sequence[str],
              merged: str) -> Dict[str, torch.Tensor]:
    """Concatenates separate query/key/value projections (keys containing ``parts[i]``, e.g.
    ``.attention.q_proj.``) into one ``qkv`` projection (``merged``, e.g. ``.attn.qkv.``)."""
    out, groups = {}, {}
    for k, v in sd.items():
        for i, tag in enumerate(parts):
            if tag in k:
                head, tail = k.split(tag, 1)
                groups.setdefault((head, tail), [None] * len(parts))[i] = v
                break
        else:
            out[k] = v
    for (head, tail), tensors in groups.items():
        if any(t is None for t in tensors):
            missing = [p for p, t in zip(parts, tensors) if t is None]
            raise CheckpointMismatchError(f'{head}: {missing} missing beside the other '
                                          'attention projections')
        out[f'{head}{merged}{tail}'] = torch.cat(tensors, 0)
    return out
