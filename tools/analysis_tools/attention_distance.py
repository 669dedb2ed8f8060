"""Mean attention distance of every head of every layer (the ViT paper's Figure 7), and where
one query pixel attends, for a config's backbone (mmvtx ViT, Swin or CvT, alone or inside a
detector or segmentor) on an image or a folder of images.

    python tools/analysis_tools/attention_distance.py CONFIG [CHECKPOINT] --images DIR|IMAGE \\
        [--size 224] [--max-images 8] [--out-dir DIR] [--query Y X]

Writes ``attention_distance.csv`` (layer, layer index, head, distance in pixels),
``attention_distance.png`` (one dot per head over the layers: the ViT paper's scatter) and,
with ``--query Y X`` (a pixel of the resized first image), ``attention_query.png``: for every
layer (rows) and head (columns), the attention weights of the query token at that pixel over
the image (Swin: within the query's window, through the shift mask in SW-MSA blocks, so the
picture shows which tokens a shifted window may see; CvT: on the stride-2 key grid). Definitions and the
mapping of windows and shifted windows to image positions: ``mmvtx/utils/attention_analysis.py``.
CHECKPOINT: a whole model's (``backbone.`` cut), the backbone's alone
(``tools/model_converters/*2mmvtx.py``) or a released backbone in any layout it converts (timm,
the authors', transformers, mmdet/mmseg); it must hold every backbone weight and nothing more
(``mmvtx.utils.load_backbone_checkpoint``). Without CHECKPOINT the model's random
initialisation is analysed (a baseline: random heads already differ from uniform attention).
"""
import argparse
import csv
import glob
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def read_image(path: str, channel_order: str = 'rgb', channels: int = 3) -> np.ndarray:
    """``H x W x channels`` uint8: colour (3), grey (1, as mmcv's ``color_type='grayscale'``)
    or the file's own channels (any other count: RGBA, RGB-D...); a file that OpenCV cannot
    decode, or that has another number of channels, is refused by its name."""
    import mmcv
    flag = {3: 'color', 1: 'grayscale'}.get(channels, 'unchanged')
    try:
        img = mmcv.imread(path, flag=flag, channel_order=channel_order)
    except Exception as e:  # noqa: BLE001 - OpenCV's errors do not name the file
        raise ValueError(f'{path} could not be read as an image (corrupt or truncated?): '
                         f'{e}') from e
    if img is None or img.size == 0:
        raise ValueError(f'{path} could not be read as an image (corrupt or truncated?)')
    img = img.reshape(img.shape[:2] + (-1,))
    if img.shape[2] != channels:
        raise ValueError(f'{path} has {img.shape[2]} channels, the backbone takes {channels} '
                         '(its in_channels)')
    return img


def image_paths(images: str) -> list:
    """``images`` itself if it is a file (any name: OpenCV decides whether it is an image),
    else the images (``IMAGE_EXTS``) of the folder ``images``, sorted."""
    if osp.isfile(images):
        return [images]
    if not osp.isdir(images):
        raise FileNotFoundError(f'--images {images}: no such file or folder')
    # the folder's own name is not a pattern: 'exp[1]' would match 'exp1'
    paths = sorted(p for p in glob.glob(osp.join(glob.escape(images), '*'))
                   if p.lower().endswith(IMAGE_EXTS))
    if not paths:
        raise FileNotFoundError(f'--images {images}: no image ({", ".join(IMAGE_EXTS)}) there')
    return paths


def load_images(folder: str, cfg, size, max_images: int, channels: int = 3) -> torch.Tensor:
    """The first ``max_images`` images of ``folder`` (or the image file ``folder``) resized to
    ``size`` (h, w), normalised as the config's data preprocessor does (mean, std, BGR -> RGB
    where it says so; ImageNet's RGB normalisation for a backbone without one):
    ``B x channels x h x w``, read as the backbone takes them (``channels``, its
    ``in_channels``: 1 reads grey images, as a pipeline's
    ``LoadImageFromFile(color_type='grayscale')``)."""
    import mmcv
    paths = image_paths(folder)
    pre = cfg.model.get('data_preprocessor')
    if pre is None:  # a backbone alone: its pretrained weights' ImageNet normalisation, in RGB
        pre = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                   bgr_to_rgb=True) if channels == 3 else {}
    # what mmengine's ImgDataPreprocessor does with the config's values: no channel swap and no
    # normalisation unless set (mmdet's and mmseg's defaults too)
    swap = bool(pre.get('bgr_to_rgb', False) or pre.get('rgb_to_bgr', False))
    mean = torch.tensor(pre.get('mean') or [0.0], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(pre.get('std') or [1.0], dtype=torch.float32).view(-1, 1, 1)
    for name, value in (('mean', mean), ('std', std)):
        if len(value) not in (1, channels):  # mmengine's data preprocessor asserts the same
            raise ValueError(f'model.data_preprocessor.{name} has {len(value)} values, the '
                             f'backbone takes {channels} channels (its in_channels)')
    out = []
    for path in paths[:max_images]:
        # (mmengine's data preprocessor swaps BGR to RGB in 3-channel inputs only: so does
        # mmcv's imread)
        img = read_image(path, 'rgb' if swap else 'bgr', channels)
        img = mmcv.imresize(img, (size[1], size[0])).reshape(size + (channels,))
        out.append((torch.from_numpy(img).permute(2, 0, 1).float() - mean) / std)
    return torch.stack(out), paths[:max_images]


def write_distance_outputs(rows, kind: str, out_dir: str, title: str, groups=None):
    """The CSV and the scatter, one colour per group with a legend: ``groups`` (layer name ->
    label), by default Swin's and CvT's stages (``stages.0``, ...); ViT's layers are grouped
    by the tool as window or global attention (ViTDet, SAM), so that the colours mean
    something (they had been one colour per layer, without a legend)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from mmvtx.utils.cli import atomic_output
    with atomic_output(osp.join(out_dir, 'attention_distance.csv')) as tmp, \
            open(tmp, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['layer', 'layer_index', 'head', 'mean_distance_px'])
        for name, index, dist in rows:
            for h, d in enumerate(dist.tolist()):
                w.writerow([name, index, h, f'{d:.3f}'])
    groups = dict(groups or {})
    for name, _, _ in rows:
        groups.setdefault(name, name.split('.blocks')[0])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = list(dict.fromkeys(groups[name] for name, _, _ in rows))  # in depth order
    cmap = plt.get_cmap('viridis', max(2, len(labels)))
    for s, label in enumerate(labels):
        pts = [(i, d) for name, i, dist in rows if groups[name] == label
               for d in dist.tolist()]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, alpha=0.8,
                   color=cmap(s), label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers: no 0.5, 1.5, ...
    ax.set_xlabel('layer (network depth)')
    ax.set_ylabel('mean attention distance (pixels)')
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = osp.join(out_dir, 'attention_distance.png')
    with atomic_output(png) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return png


def query_maps(calls, image_index: int, pixel, size):
    """For every call: ``(layer, map)`` of :func:`query_map`."""
    return [query_map(c, image_index, pixel, size) for c in calls]


def query_map(c, image_index: int, pixel, size):
    """``(layer, heads x h x w map)`` (at the query grid's resolution) of the weights that the
    query token nearest to ``pixel`` (y, x) of image ``image_index`` puts on each key in call
    ``c`` (a key of a coarser grid, CvT's, fills the cells it covers)."""
    target = torch.tensor(pixel, dtype=torch.float32) + 0.5
    probs = c.probs.reshape(-1, *c.probs.shape[-3:])  # (images [x windows]) x heads x Nq x Nk
    if c.q_pos.dim() == 3:  # windows: positions per window
        valid = c.q_valid if c.q_valid is not None else torch.ones(c.q_pos.shape[:2], bool)
        d = (c.q_pos - target).norm(dim=-1).masked_fill(~valid, float('inf'))
        w, n = divmod(int(d.argmin()), c.q_pos.shape[1])
        p = probs[image_index * c.q_pos.shape[0] + w, :, n]
        keys = c.k_pos[w]
    else:
        n = int((c.q_pos - target).norm(dim=-1).argmin())
        p, keys = probs[image_index, :, n], c.k_pos
    h, w_ = -(-size[0] // int(c.q_stride)), -(-size[1] // int(c.q_stride))
    canvas = torch.zeros(p.shape[0], h, w_)
    cell = (keys / c.q_stride).floor().long()
    inside = (cell[:, 0] < h) & (cell[:, 1] < w_)  # padded slots lie outside
    step = max(1, round(c.k_stride / c.q_stride))
    for dy in range(step):
        for dx in range(step):
            yy = (cell[inside, 0] + dy).clamp(max=h - 1)
            xx = (cell[inside, 1] + dx).clamp(max=w_ - 1)
            canvas[:, yy, xx] = p[:, inside]
    return c.layer, canvas


def draw_query_maps(maps, image: np.ndarray, pixel, out_file: str, max_heads: int = 8):
    import cv2
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    heads = min(max_heads, max(m.shape[0] for _, m in maps))
    fig, axes = plt.subplots(len(maps), heads, figsize=(1.6 * heads, 1.6 * len(maps)),
                             squeeze=False)
    for r, (layer, m) in enumerate(maps):
        for h in range(heads):
            ax = axes[r][h]
            ax.axis('off')
            if h >= m.shape[0]:
                continue
            heat = cv2.resize(m[h].numpy(), (image.shape[1], image.shape[0]),
                              interpolation=cv2.INTER_NEAREST)
            ax.imshow(image)
            ax.imshow(heat / max(heat.max(), 1e-12), cmap='inferno', alpha=0.6)
            ax.plot(pixel[1], pixel[0], 'c+', markersize=6)
            if h == 0:
                ax.set_title(layer, fontsize=6, loc='left')
    fig.tight_layout()
    fig.savefig(out_file, dpi=90)
    plt.close(fig)


def main(argv=None):
    from mmengine.config import DictAction  # light: not mmvtx, which --help would wait for
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file of a model with an mmvtx ViT, Swin or CvT '
                        'backbone (a detector, a segmentor or the backbone alone)')
    parser.add_argument('checkpoint', nargs='?',
                        help="the model's or the backbone's weights (default: the random "
                        'initialisation, a baseline)')
    parser.add_argument('--images', required=True,
                        help='an image file or a folder of images')
    parser.add_argument('--size', type=int, nargs='+', default=[224],
                        help='resize to S (square) or H W (default 224)')
    parser.add_argument('--max-images', type=int, default=8,
                        help="the folder's first N images (sorted) are measured (default 8)")
    parser.add_argument('--out-dir', default='work_dirs/attention_distance',
                        help='folder of the CSV and the pictures (made if missing; default '
                        'work_dirs/attention_distance)')
    parser.add_argument('--query', type=int, nargs=2, metavar=('Y', 'X'),
                        help='also draw where this pixel of the first image attends')
    parser.add_argument('--max-heads', type=int, default=8,
                        help='heads drawn per layer with --query (default 8)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries before the model is built, e.g. '
                        'model.backbone.window_size=12')
    args = parser.parse_args(argv)
    if len(args.size) not in (1, 2) or min(args.size) < 16:
        parser.error(f'--size {args.size}: give S or H W, each >= 16')
    size = (args.size[0], args.size[-1])
    if args.max_images < 1:
        parser.error(f'--max-images {args.max_images}: must be >= 1')
    if args.max_heads < 1:
        parser.error(f'--max-heads {args.max_heads}: must be >= 1')
    if args.query and not (0 <= args.query[0] < size[0] and 0 <= args.query[1] < size[1]):
        parser.error(f'--query {args.query}: outside the {size[0]}x{size[1]} image')
    from mmvtx.utils.attention_analysis import (backbone_kind, build_backbone_for_tool,
                                                mean_attention_distance, record_attention)
    from mmvtx.utils.cli import atomic_output, check_output_dir
    check_output_dir(parser, args.out_dir, '--out-dir')  # before any work
    backbone, cfg = build_backbone_for_tool(parser, args.config, args.checkpoint,
                                            cfg_options=args.cfg_options)
    try:
        kind = backbone_kind(backbone)
    except ValueError as e:  # another codebase's backbone: named, as a bad flag is
        parser.error(f'config {args.config}: {e}')
    # the channels the backbone's first layer (its patch embedding) takes: its in_channels
    channels = next(m.in_channels for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    try:  # no such file or folder, no image in it, one OpenCV cannot read: named as a bad flag
        images, paths = load_images(args.images, cfg, size, args.max_images, channels)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e) if str(e).startswith('--images') else f'--images {e}')
    os.makedirs(args.out_dir, exist_ok=True)
    rows = None
    for i in range(len(images)):  # one image at a time: the probabilities of one pass

        def per_call(c, draw=i == 0 and args.query):
            # each call's maps are dropped once measured (and drawn): the memory of one
            # layer's maps, not of every layer's (ViT-B at 1024 px: 9.7 GB)
            dist = mean_attention_distance(c.probs, c.q_pos, c.k_pos, c.q_valid)
            return (c.layer, dist, query_map(c, 0, args.query, size) if draw else None,
                    'window attention' if c.q_pos.dim() == 3 else 'global attention')

        results = record_attention(backbone, images[i:i + 1], on_call=per_call)
        print(f'[{i + 1}/{len(images)}] {paths[i]}', flush=True)
        if rows is None:
            rows = [[name, index, dist / len(images)]
                    for index, (name, dist, _, _) in enumerate(results)]
            groups = {name: group for name, _, _, group in results}
        else:
            for row, (_, dist, _, _) in zip(rows, results):
                row[2] = row[2] + dist / len(images)
        if i == 0 and args.query:
            import mmcv
            img = mmcv.imresize(read_image(paths[0]), (size[1], size[0]))
            with atomic_output(osp.join(args.out_dir, 'attention_query.png')) as tmp:
                draw_query_maps([m for _, _, m, _ in results], img, args.query, tmp,
                                args.max_heads)
        del results
    title = (f'{type(backbone).__name__} ({osp.basename(args.config)}), {len(images)} '
             f'image(s) at {size[0]}x{size[1]}')
    png = write_distance_outputs(rows, kind, args.out_dir, title,
                                 groups if kind == 'vit' else None)
    for name, index, dist in rows:
        print(f'{name:28s} ' + ' '.join(f'{d:7.1f}' for d in dist.tolist()))
    print(f'wrote {osp.join(args.out_dir, "attention_distance.csv")}, {png}'
          + (f', {osp.join(args.out_dir, "attention_query.png")}' if args.query else ''))


if __name__ == '__main__':
    main()
