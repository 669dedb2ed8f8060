"""One training iteration of an mmvtx recipe against its mmdet/mmseg twin: the same weights and
the same batch, every loss term side by side, then time and peak memory.

    python tools/analysis_tools/benchmark_recipe.py                     # Mask R-CNN Swin-T 1x COCO
    python tools/analysis_tools/benchmark_recipe.py --preset upernet    # UPerNet Swin-T ADE20K 512
    python tools/analysis_tools/benchmark_recipe.py --ours CONFIG --ref mmdet::PATH \
        [--device cuda --amp --optim-step]

Both whole models are built from their configs with every ``Pretrained`` ``init_cfg`` removed
(nothing is downloaded) and drop path 0 in both backbones. The reference is initialised as its
recipe would be from scratch (its Swin's relative position tables drawn N(0, 0.02) as the authors'
initialisation does, where mmdet/mmseg would leave them zero); its backbone weights are loaded into
mmvtx's backbone through ``mmvtx.utils.load_backbone_checkpoint`` (the mmdet/mmseg layout is
converted, and the checkpoint's source selects Swin's shift rule), and the neck and heads, the same
modules in both, are copied by state dict. SyncBN becomes BN in both, as mmengine's Runner does
without distributed training. Dropout stays as configured (UPerNet's heads: 0.1) and is drawn
identically, since the RNG is seeded before each model's forward; ``--no-dropout`` turns it off.

The batch is made once by the mmvtx recipe's own train pipeline on stand-in data
(``mmvtx.datasets.standin``: COCO/ADE20K layouts written into a temporary folder, or into
``--data-root``; with mmdet's ``AspectRatioBatchSampler`` the images share one orientation) and
its model's data preprocessor, so both models see the same tensors. The reference recipe's
pipeline and preprocessor are run on the same images with the same seeds and reported as giving
the same tensors or not, and every other recipe difference outside the backbone is listed.

1. Losses: a float32 iteration of each model (TF32 off on CUDA; without ``--amp`` it is the first,
   warm-up iteration of the timing), ``torch.manual_seed`` before each forward (the RPN/RoI
   samplers and dropout draw random numbers), every term of ``model.loss`` + ``parse_losses``
   side by side with their differences and the tolerance (``LOSS_RTOL``/``LOSS_ATOL``). Also
   compared: the backbone maps and every gradient (the reference's backbone gradients converted
   to mmvtx's layout by the same converter as its weights), and for two-stage detectors the RPN
   proposals and the sampled anchors and RoIs. Proposals are ranked by score, and near-tied
   scores (common at random initialisation) can come out in either order from backbones that
   agree to 1e-6, which changes the RoIs the sampler draws: mmvtx's RoI head is therefore given
   the reference's proposals, and the RoI losses it gets on its own proposals are printed beside.
   Gradients at random initialisation agree less closely than losses (about 1e-4 of their norm):
   ReLU masks and BatchNorm's mean subtraction amplify rounding. That is their noise floor: the
   reference against itself with its backbone maps perturbed by 1e-6 (relative, random) differs
   as much (Mask R-CNN 1.2e-4 backbone / 4.5e-5 neck and heads; UPerNet 5.5e-5 / 2.2e-5).
2. One training iteration (forward, loss, backward, and with ``--optim-step`` the recipe's
   optimizer step) of each model on its own proposals, the two alternated, median of
   ``--repeats``; peak memory of one iteration of each model in a fresh subprocess (the way
   ``benchmark_backbone.py`` measures: ``mmvtx.utils.benchmark``).
"""
import argparse
import contextlib
import copy
import importlib
import io
import os.path as osp
import random
import shutil
import statistics
import sys
import tempfile
from typing import Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402


def innermost_dataset(dataset_cfg):
    """:func:`mmvtx.engine.runner.innermost_dataset`, imported when first needed: importing
    mmvtx registers everything (seconds), which ``--help`` should not wait for."""
    from mmvtx.engine.runner import innermost_dataset as innermost
    return innermost(dataset_cfg)


PRESETS = {
    'mask-rcnn': ('configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
                  'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'),
    'upernet': ('configs/swin/upernet_swin-t-p4-w7_4xb4-160k_ade20k-512x512.py',
                'mmseg::swin/'
                'swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'),
}
# A loss term of the two models agrees when |ours - ref| <= LOSS_RTOL * |ref| + LOSS_ATOL. The
# backbones' maps agree to 3e-7..2e-6 of their largest value in float32 (the same sums in other
# orders); a loss is a mean over many such values and keeps that agreement (measured: 7e-7 at
# most) as long as no discrete choice (proposal ranking, NMS, sampling) flips.
LOSS_RTOL = 1e-5
LOSS_ATOL = 1e-7


# ----------------------------------------------------------------------------- configs
def load_config(path: str):
    """A config file, or ``mmdet::``/``mmseg::`` path inside an installed package."""
    from mmengine.config import Config

    from mmvtx.utils.cli import config_path
    if '::' not in path and not osp.isfile(path) and osp.isfile(osp.join(ROOT, path)):
        path = osp.join(ROOT, path)
    try:
        path = config_path(path)
    except FileNotFoundError as error:
        raise SystemExit(f'error: {error}')
    return Config.fromfile(path)


def strip_pretrained(node):
    """Removes every ``Pretrained`` init_cfg and ``pretrained=`` path below ``node``."""
    if isinstance(node, dict):
        for key in list(node):
            value = node[key]
            if key == 'init_cfg' and value is not None:
                cfgs = value if isinstance(value, (list, tuple)) else [value]
                kept = [c for c in cfgs
                        if not (isinstance(c, dict) and c.get('type') == 'Pretrained')]
                if not kept:
                    node[key] = None
                else:
                    node[key] = kept if isinstance(value, (list, tuple)) else kept[0]
            elif key == 'pretrained' and isinstance(value, str):
                node[key] = None
            else:
                strip_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            strip_pretrained(value)


def set_key(node, key: str, value):
    """Sets ``key`` wherever it occurs below ``node``; returns how many were set."""
    count = 0
    if isinstance(node, dict):
        for k in node:
            if k == key:
                node[k] = value
                count += 1
            else:
                count += set_key(node[k], key, value)
    elif isinstance(node, (list, tuple)):
        count += sum(set_key(v, key, value) for v in node)
    return count


def standin_kind(cfg) -> str:
    ds_type = str(innermost_dataset(cfg.train_dataloader.dataset).get('type', ''))
    if 'Coco' in ds_type:
        return 'coco'
    if 'ADE' in ds_type:
        return 'ade20k'
    raise SystemExit(f'no stand-in data for dataset type {ds_type!r} (COCO and ADE20K have one)')


def write_standin(kind: str, base: str, num_train: int) -> str:
    from mmvtx.datasets.standin import write_ade20k_standin, write_coco_standin
    if kind == 'coco':
        return write_coco_standin(root=osp.join(base, 'coco'), num_train=num_train, num_val=4,
                                  seed=0)
    return write_ade20k_standin(root=osp.join(base, 'ade', 'ADEChallengeData2016'),
                                num_train=num_train, num_val=4, seed=0)


def point_data(cfg, data_root: str):
    """The config's datasets and evaluators read ``data_root`` (its relative paths kept)."""
    data_root = data_root.rstrip('/') + '/'
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(name) is not None:
            innermost_dataset(cfg[name].dataset).data_root = data_root
    for name in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(name)
        for ev in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
            if isinstance(ev, dict) and isinstance(ev.get('ann_file'), str):
                ev.ann_file = osp.join(data_root, 'annotations', osp.basename(ev.ann_file))


def prepare_config(path: str, data_root: str, args):
    cfg = load_config(path)
    if cfg.get('custom_imports'):
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg.custom_imports)
    strip_pretrained(cfg.model)
    cfg.model.backbone.drop_path_rate = 0.0
    if args.no_dropout:
        set_key(cfg.model, 'dropout_ratio', 0.0)
    point_data(cfg, data_root)
    if args.amp and args.device.startswith('cuda'):
        # what tools/train.py --amp does: AmpOptimWrapper (float16 autocast, dynamic loss scale)
        from mmvtx.engine.runner import prepare_train_cfg
        prepare_train_cfg(cfg, path, work_dir=tempfile.gettempdir(), amp=True)
    return cfg


def plain(node):
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [plain(v) for v in node]
    return node


def config_diff(a, b, path: str = ''):
    """``path: a vs b`` for every leaf where two config trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            yield from config_diff(a.get(k, '<absent>'), b.get(k, '<absent>'),
                                   f'{path}.{k}' if path else str(k))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from config_diff(x, y, f'{path}[{i}]')
    elif a != b:
        yield f'{path}: {a!r} vs {b!r}'


def recipe_differences(ours_cfg, ref_cfg, args):
    ours_model, ref_model = plain(ours_cfg.model), plain(ref_cfg.model)
    ours_model.pop('backbone'), ref_model.pop('backbone')  # different classes, compared by weight
    pairs = [('model', ours_model, ref_model),
             ('train pipeline',
              plain(innermost_dataset(ours_cfg.train_dataloader.dataset).pipeline),
              plain(innermost_dataset(ref_cfg.train_dataloader.dataset).pipeline)),
             ('images per GPU', ours_cfg.train_dataloader.batch_size,
              ref_cfg.train_dataloader.batch_size)]
    if args.optim_step:
        pairs.append(('optim_wrapper', plain(ours_cfg.optim_wrapper),
                      plain(ref_cfg.optim_wrapper)))
    return [f'{what}: {line}' if not line.startswith(':') else f'{what}{line}'
            for what, a, b in pairs for line in config_diff(a, b)]


# ----------------------------------------------------------------------------- models and data
def registries(scope: str):
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    return importlib.import_module(f'{scope}.registry')


def build_model(cfg, seed: int):
    from mmengine.model import revert_sync_batchnorm
    torch.manual_seed(seed)
    model = registries(cfg.default_scope).MODELS.build(cfg.model)
    return revert_sync_batchnorm(model)  # what mmengine's Runner does without distributed training


def build_pair(ours_cfg, ref_cfg, seed: int):
    """(ours, ref, what was loaded) with the reference's weights in both."""
    from mmvtx.utils import load_backbone_checkpoint
    ref = build_model(ref_cfg, seed)
    ref.init_weights()
    with torch.no_grad():
        for name, p in ref.backbone.named_parameters():
            if name.endswith('relative_position_bias_table'):
                torch.nn.init.trunc_normal_(p, std=0.02)  # mmdet/mmseg leave them zero
    ours = build_model(ours_cfg, seed + 1)
    ref_sd = ref.state_dict()
    converted = load_backbone_checkpoint(ours.backbone, ref_sd, prefix='backbone.')
    rest = {k: v for k, v in ref_sd.items() if not k.startswith('backbone.')}
    missing, unexpected = ours.load_state_dict(rest, strict=False)
    missing = [k for k in missing if not k.startswith('backbone.')]
    if missing or unexpected:
        raise SystemExit('the two models differ outside the backbone: '
                         f'missing in the reference {missing}, not in mmvtx {unexpected}')
    ours.train()
    ref.train()  # not chained: mmdet's Swin.train() returns None
    return ours, ref, converted


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_indices(cfg, dataset, n: int):
    """The first ``n`` training images, or with mmdet's ``AspectRatioBatchSampler`` the first
    ``n`` of the first image's orientation (that sampler batches landscape and portrait images
    apart, so that padding to the batch's largest image stays small)."""
    indices = list(range(len(dataset)))
    batch_sampler = cfg.train_dataloader.get('batch_sampler') or {}
    if 'AspectRatio' in str(batch_sampler.get('type', '')):
        def portrait(i):
            info = dataset.get_data_info(i)
            return info['width'] < info['height']
        indices = [i for i in indices if portrait(i) == portrait(0)]
    if len(indices) < n:
        raise SystemExit(f'the stand-in training set has {len(indices)} images for a batch, '
                         f'fewer than {n}')
    return indices[:n]


def pipeline_samples(cfg, n: int, seed: int):
    """``n`` training samples through the config's train pipeline (:func:`batch_indices`)."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress lines
        dataset = registries(cfg.default_scope).DATASETS.build(
            innermost_dataset(cfg.train_dataloader.dataset))
        dataset.full_init()
    indices = batch_indices(cfg, dataset, n)
    seed_everything(seed)
    return [dataset[i] for i in indices]


def gt_tensors(sample):
    ds = sample['data_samples']
    out = [sample['inputs']]
    if 'gt_instances' in ds:
        boxes = ds.gt_instances.bboxes
        out += [getattr(boxes, 'tensor', boxes), ds.gt_instances.labels]
        if 'masks' in ds.gt_instances:
            out.append(torch.from_numpy(ds.gt_instances.masks.to_ndarray()))
    if 'gt_sem_seg' in ds:
        out.append(ds.gt_sem_seg.data)
    return out


def same_tensors(a, b) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def build_batch(ours, ref, ours_cfg, ref_cfg, args):
    """The batch both models train on (mmvtx recipe's pipeline and preprocessor) and whether the
    reference recipe's own pipeline and preprocessor give the same."""
    from mmengine.dataset import pseudo_collate
    samples = pipeline_samples(ours_cfg, args.batch_size, args.seed)
    ref_samples = pipeline_samples(ref_cfg, args.batch_size, args.seed)
    same_pipeline = all(same_tensors(gt_tensors(a), gt_tensors(b))
                        for a, b in zip(samples, ref_samples))
    device = torch.device(args.device)
    ours.to(device)
    ref.to(device)
    batch = pseudo_collate(samples)
    data = ours.data_preprocessor(copy.deepcopy(batch), True)
    ref_data = ref.data_preprocessor(copy.deepcopy(batch), True)
    same_preprocessor = (data['inputs'].shape == ref_data['inputs'].shape and
                         torch.equal(data['inputs'], ref_data['inputs']))
    return data, same_pipeline, same_preprocessor


# ----------------------------------------------------------------------------- one iteration
class Iteration:
    """One training iteration of ``model`` on ``data``, as mmengine's ``train_step`` runs it:
    forward and losses (seeded), backward, and with ``--optim-step`` the optimizer step."""

    def __init__(self, model, cfg, data, args):
        from mmengine.optim import AmpOptimWrapper, build_optim_wrapper
        self.model, self.data, self.seed = model, data, args.seed
        self.amp, self.optim_step = args.amp, args.optim_step
        self.optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        if isinstance(self.optim_wrapper, AmpOptimWrapper):
            self.autocast = lambda: self.optim_wrapper.optim_context(model)
        elif args.amp:  # the CPU: bfloat16 autocast (mmengine's AmpOptimWrapper needs a GPU)
            self.autocast = lambda: torch.autocast(args.device.split(':')[0],
                                                   dtype=torch.bfloat16)
        else:
            self.autocast = contextlib.nullcontext

    def losses(self, amp: bool):
        torch.manual_seed(self.seed)
        with self.autocast() if amp else contextlib.nullcontext():
            losses = self.model.loss(self.data['inputs'], self.data['data_samples'])
        return self.model.parse_losses(losses)

    def __call__(self):
        loss, log_vars = self.losses(self.amp)
        self.optim_wrapper.backward(loss)  # scaled by AmpOptimWrapper
        if self.optim_step:
            self.optim_wrapper.step()
        self.optim_wrapper.zero_grad()
        return log_vars

    def check(self, shared: Optional[dict] = None, step: bool = True) -> dict:
        """The same iteration in float32 (TF32 off), recording the losses, the backbone's maps,
        the gradients and a detector's proposals and samples. With ``shared`` (the reference's
        record) a detector's RoI head is given the reference's proposals (see
        :func:`recording_detector`). ``step=False``: no optimizer step even with
        ``--optim-step`` (the weights stay those both models started from)."""
        record = {}
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        hook = self.model.backbone.register_forward_hook(
            lambda module, inputs, outputs: record.__setitem__(
                'maps', [o.detach().clone() for o in outputs]))
        try:
            with recording_detector(self.model, record, shared):
                loss, log_vars = self.losses(amp=False)
            loss.backward()
        finally:
            hook.remove()
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        record['losses'] = {k: v.item() for k, v in log_vars.items()}
        record['grads'] = {k: p.grad.detach().clone() for k, p in self.model.named_parameters()
                           if p.grad is not None}
        if self.optim_step and step:
            self.optim_wrapper.optimizer.step()  # unscaled float32 gradients: the plain step
        self.optim_wrapper.zero_grad()
        return record


class CheckedFirst:
    """An :class:`Iteration` whose first call is its float32 :meth:`~Iteration.check` (given
    the record of ``shared_from``'s check, which must have run before)."""

    def __init__(self, iteration: Iteration, shared_from: Optional['CheckedFirst'] = None):
        self.iteration, self.shared_from, self.record = iteration, shared_from, None

    def __call__(self):
        if self.record is None:
            self.record = self.iteration.check(
                self.shared_from.record if self.shared_from is not None else None)
        else:
            self.iteration()


@contextlib.contextmanager
def recording_detector(model, record: dict, shared: Optional[dict] = None):
    """Records a two-stage detector's RPN proposals and the indices its samplers draw.

    Proposals are ranked by score, and scores within a float32 rounding of each other (a tie
    at random initialisation is common) can come out in either order from two backbones that
    agree to 1e-6; the RoI sampler draws indices into that list, so one swapped pair can change
    the sampled RoIs and the RoI losses. With ``shared`` (the reference's record) the RoI head
    first computes its losses on the model's own proposals (without grad, RNG state restored;
    recorded as ``own_roi_losses``), then trains on the reference's proposals, so that the
    losses and gradients compare the models rather than the tie-breaking."""
    patched = []

    def patch(obj, name, make):
        setattr(obj, name, make(getattr(obj, name)))
        patched.append((obj, name))

    roi_head = getattr(model, 'roi_head', None)
    if roi_head is not None:
        def roi_loss(orig):
            def loss(x, rpn_results_list, batch_data_samples, *args, **kwargs):
                record['proposals'] = [(r.bboxes.detach().clone(), r.scores.detach().clone())
                                       for r in rpn_results_list]
                record['rpn_results'] = copy.deepcopy(rpn_results_list)
                if shared is None or 'rpn_results' not in shared:
                    return orig(x, rpn_results_list, batch_data_samples, *args, **kwargs)
                devices = [x[0].device] if x[0].device.type == 'cuda' else []
                with torch.no_grad(), torch.random.fork_rng(devices=devices):
                    own = orig(x, rpn_results_list, batch_data_samples, *args, **kwargs)
                record['own_roi_losses'] = model.parse_losses(own)[1]
                record.pop('RoIs', None)  # what the sampler drew there
                return orig(x, copy.deepcopy(shared['rpn_results']), batch_data_samples, *args,
                            **kwargs)
            return loss
        patch(roi_head, 'loss', roi_loss)
    for tag, owner, attr in (('RPN anchors', getattr(model, 'rpn_head', None), 'sampler'),
                             ('RoIs', roi_head, 'bbox_sampler')):
        sampler = getattr(owner, attr, None)
        if sampler is None or not hasattr(sampler, 'sample'):
            continue

        def sample_of(orig, tag=tag):
            def sample(*args, **kwargs):
                result = orig(*args, **kwargs)
                record.setdefault(tag, []).append((result.pos_inds.clone(),
                                                   result.neg_inds.clone()))
                return result
            return sample
        patch(sampler, 'sample', sample_of)
    try:
        yield record
    finally:
        for obj, name in patched:
            delattr(obj, name)


def compare_proposals(ours: list, ref: list) -> str:
    """How the two models' proposal lists differ: same boxes in the same order, boxes swapped
    in the ranking (with the largest score gap of a swapped box), or other boxes."""
    counts = [(len(a), len(b)) for (a, _), (b, _) in zip(ours, ref)]
    if any(x != y for x, y in counts):
        return f'DIFFERENT numbers of proposals per image {counts} (mmvtx, reference)'
    moved = other = 0
    gap = 0.0
    for (boxes, scores), (ref_boxes, ref_scores) in zip(ours, ref):
        if not len(boxes):
            continue
        differs = ((boxes - ref_boxes).abs().amax(1) > 0.5).nonzero().flatten()
        for i in differs.tolist():
            dist = (ref_boxes - boxes[i]).abs().amax(1)
            j = int(dist.argmin())
            if dist[j] <= 0.5:  # the same box at another rank
                moved += 1  # the reference ranked it j-th: how close were the two scores?
                gap = max(gap, abs(ref_scores[i].item() - ref_scores[j].item()))
            else:
                other += 1
    n = ' + '.join(str(x) for x, _ in counts)
    if not moved and not other:
        diff = max(((a - b).abs().max().item() for (a, _), (b, _) in zip(ours, ref) if len(a)),
                   default=0.0)
        return f'{n} in both, the same boxes in the same order (max |box diff| {diff:.1e} px)'
    return (f'{n} in both, {moved} box(es) at another rank (the reference\'s scores of the '
            f'swapped boxes differ by {gap:.1e} at most: a float32 near-tie broken the other way)'
            + (f', {other} box(es) not in the reference\'s list' if other else ''))


def compare_detector_records(a: dict, b: dict):
    """Lines saying whether both models ranked, suppressed and sampled alike."""
    lines = []
    if 'proposals' in a:
        lines.append('RPN proposals: ' + compare_proposals(a['proposals'], b['proposals']))
    if 'own_roi_losses' in a:
        own = a['own_roi_losses']
        terms = [f'{k} {float(own[k]):.10g} (rel diff '
                 f'{abs(float(own[k]) - b["losses"][k]) / abs(b["losses"][k]):.1e})'
                 for k in own if 'loss' in k and k != 'loss' and b['losses'].get(k)]
        lines.append('the RoI heads were given the reference\'s proposals; on its own '
                     'proposals mmvtx\'s RoI losses are ' + ', '.join(terms))
    for tag in ('RPN anchors', 'RoIs'):
        if tag in a:
            same = len(a[tag]) == len(b[tag]) and all(
                torch.equal(pa, pb) and torch.equal(na, nb)
                for (pa, na), (pb, nb) in zip(a[tag], b[tag]))
            npos = sum(len(p) for p, _ in a[tag])
            nneg = sum(len(n) for _, n in a[tag])
            lines.append(f'sampled {tag}: ' + (f'the same {npos} positives and {nneg} negatives '
                                               'in both' if same else 'DIFFERENT'))
    return lines


def relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    scale = b.abs().max().item()
    diff = (a.float() - b.float()).abs().max().item()
    return diff / scale if scale else (0.0 if diff == 0 else float('inf'))


def compare_maps_and_grads(ours, a: dict, b: dict):
    """Lines comparing the backbone maps and every gradient (the reference's backbone gradients
    converted to mmvtx's layout by the backbone's own checkpoint converter)."""
    maps = [relative_diff(x, y) for x, y in zip(a['maps'], b['maps'])]
    lines = [f'backbone maps ({len(maps)} levels): max |diff| / max |value| '
             + ', '.join(f'{r:.1e}' for r in maps)]
    ref_backbone = {k[len('backbone.'):]: g for k, g in b['grads'].items()
                    if k.startswith('backbone.')}
    # the converter also writes the backbone's setting records (Swin's ``shift_rule``): they
    # are buffers, no gradients, and were listed as UNMATCHED gradients on every Swin run
    not_trained = set(ours.backbone.state_dict()) - {n for n, _ in
                                                     ours.backbone.named_parameters()}
    ref_backbone = {'backbone.' + k: g for k, g in
                    ours.backbone.convert_state_dict(ref_backbone).state_dict.items()
                    if k not in not_trained}
    ref_grads = dict(ref_backbone, **{k: g for k, g in b['grads'].items()
                                      if not k.startswith('backbone.')})
    for part, keep in (('backbone', lambda k: k.startswith('backbone.')),
                       ('neck and heads', lambda k: not k.startswith('backbone.'))):
        keys = [k for k in a['grads'] if keep(k) and k in ref_grads]
        unmatched = [k for k in a['grads'] if keep(k) and k not in ref_grads] + [
            k for k in ref_grads if keep(k) and k not in a['grads']]
        diff2 = sum((a['grads'][k] - ref_grads[k]).double().square().sum().item() for k in keys)
        norm2 = sum(ref_grads[k].double().square().sum().item() for k in keys)
        largest = max((ref_grads[k].abs().max().item() for k in keys), default=0.0)
        worst = max(((relative_diff(a['grads'][k], ref_grads[k]), k) for k in keys),
                    default=(0.0, None))
        where = '' if worst[1] is None else (
            f' ({worst[1]}, whose max |grad| is '
            f'{ref_grads[worst[1]].abs().max().item() / largest:.0e} of the largest)')
        lines.append(f'gradients, {part} ({len(keys)} tensors): |diff| / |grad| '
                     f'{(diff2 / norm2) ** 0.5 if norm2 else 0.0:.1e} over all of them; '
                     f'worst tensor: max |diff| / max |grad| {worst[0]:.1e}{where}'
                     + (f'; UNMATCHED {unmatched[:5]}' if unmatched else ''))
    return lines


def loss_table(ours_vars, ref_vars, title: str, verdict: bool):
    print(title)
    print(f'  {"term":<24} {"mmvtx":>18} {"reference":>18} {"abs diff":>10} {"rel diff":>10}')
    worst_abs = worst_rel = 0.0
    ok = True
    for key in list(ref_vars) + [k for k in ours_vars if k not in ref_vars]:
        if key not in ours_vars or key not in ref_vars:
            print(f'  {key:<24} only in {"mmvtx" if key in ours_vars else "the reference"}')
            ok = False
            continue
        a, b = float(ours_vars[key]), float(ref_vars[key])
        d = abs(a - b)
        r = d / abs(b) if b else (0.0 if d == 0 else float('inf'))
        is_loss = 'loss' in key
        name = key if is_loss else f'{key} (metric)'
        print(f'  {name:<24} {a:>18.10g} {b:>18.10g} {d:>10.1e} {r:>10.1e}')
        if is_loss:
            worst_abs, worst_rel = max(worst_abs, d), max(worst_rel, r)
            ok &= d <= LOSS_RTOL * abs(b) + LOSS_ATOL
    if verdict:
        print(f'  loss agreement: max abs diff {worst_abs:.1e}, max rel diff {worst_rel:.1e} '
              f'over the loss terms; tolerance rel {LOSS_RTOL:g} (+ abs {LOSS_ATOL:g}): '
              + ('within' if ok else 'EXCEEDED'))
    return ok


def describe_batch(data) -> str:
    return 'x'.join(str(s) for s in data['inputs'].shape)


# ----------------------------------------------------------------------------- main
def setup(args):
    """Data, configs, models and batch, identical in the main process and the memory workers."""
    ours_cfg_probe = load_config(args.ours)
    kind = standin_kind(ours_cfg_probe)
    if args.batch_size is None:
        args.batch_size = ours_cfg_probe.train_dataloader.batch_size
    data_root = write_standin(kind, args.data_root, max(8, 4 * args.batch_size))
    ours_cfg = prepare_config(args.ours, data_root, args)
    ref_cfg = prepare_config(args.ref, data_root, args)
    if ours_cfg.default_scope != ref_cfg.default_scope:
        raise SystemExit(f'default scopes differ: {ours_cfg.default_scope} vs '
                         f'{ref_cfg.default_scope}')
    from mmengine.registry import init_default_scope
    init_default_scope(ours_cfg.default_scope)  # models, datasets, optimizers resolve in it
    ours, ref, converted = build_pair(ours_cfg, ref_cfg, args.seed)
    data, same_pipeline, same_preprocessor = build_batch(ours, ref, ours_cfg, ref_cfg, args)
    return dict(kind=kind, data_root=data_root, ours_cfg=ours_cfg, ref_cfg=ref_cfg, ours=ours,
                ref=ref, converted=converted, data=data, same_pipeline=same_pipeline,
                same_preprocessor=same_preprocessor)


def memory_worker(args):
    s = setup(args)
    which = args.which
    model, cfg = (s['ours'], s['ours_cfg']) if which == 'ours' else (s['ref'], s['ref_cfg'])
    del s['ours'], s['ref']
    iteration = Iteration(model, cfg, s['data'], args)
    if args.optim_step:
        iteration()  # the optimizer's state exists before the measured iteration, as in training
    from mmvtx.utils.benchmark import peak_memory_mib, report_peak
    report_peak(peak_memory_mib(iteration, torch.device(args.device)))


def worker_command(args, which: str):
    cmd = [sys.executable, osp.abspath(__file__), '--ours', args.ours, '--ref', args.ref,
           '--data-root', args.data_root, '--batch-size', str(args.batch_size), '--device',
           args.device, '--seed', str(args.seed), '--memory-worker', which]
    for flag in ('amp', 'optim_step', 'no_dropout'):
        if getattr(args, flag):
            cmd.append('--' + flag.replace('_', '-'))
    return cmd


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--preset', choices=sorted(PRESETS), default='mask-rcnn',
                        help='a pair of configs (default: mask-rcnn)')
    parser.add_argument('--ours', help='mmvtx recipe config (overrides the preset\'s)')
    parser.add_argument('--ref', help='reference config, e.g. mmdet::swin/... (overrides the '
                        'preset\'s)')
    parser.add_argument('--data-root', help='where the stand-in data is written (an existing '
                        'one is reused); default: a temporary folder, removed at the end')
    parser.add_argument('--batch-size', type=int, help='images in the batch (default: the mmvtx '
                        'recipe\'s images per GPU; UPerNet\'s pyramid pooling BN needs 2 or more)')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N (default cpu)')
    parser.add_argument('--amp', action='store_true', help='time with mixed precision (CUDA: '
                        'AmpOptimWrapper as tools/train.py --amp; CPU: bfloat16 autocast)')
    parser.add_argument('--optim-step', action='store_true',
                        help='include the recipe\'s optimizer step in the iteration')
    parser.add_argument('--no-dropout', action='store_true',
                        help='set every head\'s dropout_ratio to 0 (default: as configured, '
                        'drawn identically)')
    parser.add_argument('--repeats', type=int, default=3, help='timed iterations per model')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory subprocesses (one more iteration per model)')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed iterations per model before the timed ones; without --amp '
                        'the first iteration is the float32 check (timed if --warmup 0, with '
                        'its recording and, for detectors, mmvtx\'s extra RoI-head forward)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the weights, the pipeline\'s random draws and each forward '
                        '(default 0)')
    parser.add_argument('--memory-worker', dest='which', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f'--batch-size {args.batch_size}: must be >= 1')
    if args.repeats < 1:
        parser.error(f'--repeats {args.repeats}: must be >= 1')
    if args.warmup < 0:
        parser.error(f'--warmup {args.warmup}: must be >= 0')
    from mmvtx.utils.benchmark import check_device
    problem = check_device(args.device)
    if problem:
        parser.error(f'--device {args.device}: {problem}')
    preset_ours, preset_ref = PRESETS[args.preset]
    args.ours, args.ref = args.ours or preset_ours, args.ref or preset_ref
    for flag, path in (('--ours', args.ours), ('--ref', args.ref)):
        # a config that is no file is named as a bad flag is (Config.fromfile's traceback)
        if '::' not in path and not osp.isfile(path) and not osp.isfile(osp.join(ROOT, path)):
            parser.error(f'{flag} {path}: no such file')
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmengine.logging import MMLogger
    # the current logger for mmengine/mmdet/mmseg/mmvtx: errors only (the optimizer constructor
    # alone logs a line per parameter); what matters is printed below
    MMLogger.get_instance('benchmark_recipe', log_level='ERROR')
    if args.which:
        return memory_worker(args)
    own_root = args.data_root is None
    if own_root:
        args.data_root = tempfile.mkdtemp(prefix='mmvtx-recipe-bench-')
    try:
        run(args)
    finally:
        if own_root:
            shutil.rmtree(args.data_root, ignore_errors=True)


def run(args):
    from mmvtx.utils.benchmark import alternate_timing, device_name, run_memory_worker
    device = torch.device(args.device)
    s = setup(args)
    ours, ref, data = s['ours'], s['ref'], s['data']
    if args.amp and device.type == 'cpu' and hasattr(ref, 'roi_head'):
        raise SystemExit('--amp on the CPU: mmcv\'s CPU RoIAlign has no bfloat16 kernel (mmdet '
                         'casts the RoIs to the features\' dtype); time AMP with --device cuda')
    diffs = recipe_differences(s['ours_cfg'], s['ref_cfg'], args)
    rule = getattr(ours.backbone, 'shifts_every_block', None)
    precision = ('AMP ' + ('float16 (AmpOptimWrapper)' if device.type == 'cuda' else 'bfloat16')
                 if args.amp else 'fp32')
    print(f'recipe: {args.ours} (mmvtx) vs {args.ref} (reference)')
    print(f'device: {args.device}, {device_name(device)}; torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads; {precision}')
    print(f'batch: {args.batch_size} image(s) of stand-in {s["kind"]} data through the mmvtx '
          f'recipe\'s train pipeline and data preprocessor: inputs {describe_batch(data)}; '
          f'the reference recipe\'s pipeline gives '
          f'{"the same samples" if s["same_pipeline"] else "DIFFERENT samples"}, its '
          f'preprocessor {"the same inputs" if s["same_preprocessor"] else "DIFFERENT inputs"}')
    print(f'weights: the reference\'s random init; backbone loaded into mmvtx\'s through '
          f'load_backbone_checkpoint ({s["converted"].source} layout'
          + ('' if rule is None else
             f'; shift rule: {"every SW-MSA block shifts" if rule else "the authors"}')
          + '), neck and heads copied; drop path 0; head dropout '
          + ('off' if args.no_dropout else 'as configured, same seed before each forward'))
    print('recipe differences outside the backbone:' + ('' if diffs else ' none'))
    for line in diffs:
        print(f'  {line}')

    iterations = {'ours': Iteration(ours, s['ours_cfg'], data, args),
                  'ref': Iteration(ref, s['ref_cfg'], data, args)}
    # the reference first: a detector's RoI head in mmvtx's check is given its proposals
    if args.amp:  # the check in float32 first, then the reduced-precision losses and timing
        checks = {'ref': iterations['ref'].check(step=False)}
        checks['ours'] = iterations['ours'].check(checks['ref'], step=False)
        amp_vars = {which: {k: v.item() for k, v in it.losses(amp=True)[1].items()}
                    for which, it in iterations.items()}
        times = alternate_timing(iterations, args.repeats, args.warmup, device)
    else:  # the float32 check is each model's first iteration (a warm-up one unless --warmup 0)
        steps = {'ref': CheckedFirst(iterations['ref'])}
        steps['ours'] = CheckedFirst(iterations['ours'], shared_from=steps['ref'])
        times = alternate_timing(steps, args.repeats, args.warmup, device)
        checks = {which: step.record for which, step in steps.items()}
        del steps

    # 1. losses
    loss_table(checks['ours']['losses'], checks['ref']['losses'],
               'losses (fp32, same weights and batch, torch.manual_seed(%d) before each forward):'
               % args.seed, verdict=True)
    for line in (compare_detector_records(checks['ours'], checks['ref']) +
                 compare_maps_and_grads(ours, checks['ours'], checks['ref'])):
        print(f'  {line}')
    if args.amp:
        loss_table(amp_vars['ours'], amp_vars['ref'], f'losses under {precision} (reduced '
                   'precision: no tolerance claimed):', verdict=False)
    sys.stdout.flush()

    # 2. time and memory of one iteration
    t_ours, t_ref = statistics.median(times['ours']), statistics.median(times['ref'])
    del iterations, ours, ref, s, checks
    if args.no_memory:
        m_ours = m_ref = None
    else:
        m_ours = run_memory_worker(worker_command(args, 'ours'))
        m_ref = run_memory_worker(worker_command(args, 'ref'))
    what = 'forward + loss + backward' + (' + optimizer step' if args.optim_step else '')
    print(f'one training iteration ({what}), {precision}, batch {describe_batch(data)}:')
    print('| | mmvtx | reference | mmvtx / reference |')
    print('|---|---|---|---|')
    print(f'| time, median of {args.repeats} | {t_ours:.3f} s | {t_ref:.3f} s | '
          f'{t_ours / t_ref:.2f}x |')
    if m_ours is None:
        print('| peak memory | not measured (--no-memory) | | |')
    else:
        print(f'| peak memory | {m_ours:.0f} MiB | {m_ref:.0f} MiB | '
              f'{f"{m_ours / m_ref:.2f}x" if m_ref > 0 else "n/a"} |')


if __name__ == '__main__':
    main()
