"""How the cost of each backbone grows with the image: FLOPs counted from the operators run
(``torch.utils.flop_counter``, fused attention included; no hand formulas), and, unless
``--flops-only``, the measured forward + backward time and peak memory, over a range of square
input sizes, beside mmdet's Swin and mmseg's ViT; and a params/FLOPs table of the presets.

    python tools/analysis_tools/cost_vs_resolution.py [--models swin-t vit-b cvt-13 \\
        mmdet-swin-t mmseg-vit-b] [--sizes 224 448 672 896 1120 1344] [--flops-only] \\
        [--out-dir DIR]
    python tools/analysis_tools/cost_vs_resolution.py --table [--models swin-t ...] [--out-dir DIR]

Writes ``cost_vs_resolution.csv`` and ``cost_vs_resolution.png`` (log-log, one line per
model, the exponent ``k`` of ``cost ~ pixels^k`` fitted over the sizes printed in the legend;
Swin's windows make attention linear in the pixels, ViT's global attention quadratic, so the
fits land between 1 and 2 by how much of the cost is attention; padding to window multiples
and CvT's first stage, global attention over a quarter-resolution key grid, bend the curves).
``--table`` writes ``params_flops.md``: parameters and GMACs (what the papers call GFLOPs: a
multiply-add counted once) of every preset (or those of ``--models``) at 224x224 and
1333x800, beside the published figures. ViT's figures are the encoder's (its simple feature
pyramid is counted apart), as the papers count them; published parameter counts include the
classifier, ours have none. Sizes are deduplicated and sorted; the fits need two or more.
"""
import argparse
import csv
import math
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

# published figures at 224x224 (params in millions, GFLOPs = multiply-adds in billions)
PUBLISHED = {
    'swin-t': (28, 4.5, 'Swin paper, Table 1'), 'swin-s': (50, 8.7, 'Swin paper, Table 1'),
    'swin-b': (88, 15.4, 'Swin paper, Table 1'), 'swin-l': (197, 34.5, 'Swin paper, Table 1'),
    'vit-b': (86, 17.6, 'DeiT paper, Table 1 (ViT-B/16)'),
    'vit-l': (307, 61.6, 'DeiT-III / timm (ViT-L/16)'),
    'cvt-13': (20, 4.5, 'CvT paper, Table 2'), 'cvt-21': (32, 7.1, 'CvT paper, Table 2'),
}
CURVE_MODELS = ['swin-t', 'vit-b', 'cvt-13', 'mmdet-swin-t', 'mmseg-vit-b']
CURVE_SIZES = [224, 448, 672, 896, 1120, 1344]
PRESETS = {'swin-t': 'tiny', 'swin-s': 'small', 'swin-b': 'base', 'swin-l': 'large',
           'vit-b': 'base', 'vit-l': 'large', 'cvt-13': 'cvt-13', 'cvt-21': 'cvt-21'}


def build(name: str):
    """A backbone by name: ``swin-t``..., ``vit-b``, ``cvt-13``, or a reference
    ``mmdet-swin-t`` / ``mmseg-vit-b``."""
    from mmvtx.models.backbones import CvT, SwinTransformer, ViT
    if name == 'mmdet-swin-t':
        from mmdet.models.backbones import SwinTransformer as MMDetSwin
        return MMDetSwin(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                         window_size=7, drop_path_rate=0.0)
    if name == 'mmseg-vit-b':
        from mmseg.models.backbones import VisionTransformer
        return VisionTransformer(img_size=224, embed_dims=768, num_layers=12, num_heads=12,
                                 out_indices=(2, 5, 8, 11), drop_path_rate=0.0)
    if name not in PRESETS:
        raise ValueError(f'--models {name!r}: expected one of '
                         f'{sorted(PRESETS) + ["mmdet-swin-t", "mmseg-vit-b"]}')
    cls = {'swin': SwinTransformer, 'vit': ViT, 'cvt': CvT}[name.split('-')[0]]
    return cls(arch=PRESETS[name], drop_path_rate=0.0)


def encoder_flops(model, x) -> tuple:
    """``(total, part of ViT's simple feature pyramid)`` forward FLOPs (2 per multiply-add)."""
    from mmvtx.utils.flops import count_flops
    with torch.no_grad():
        counted = count_flops(lambda: model(x))
    pyramid = sum(n for name, n in counted.by_module.items() if name.endswith('.pyramid'))
    return counted.total, pyramid


def params(model, exclude: str = 'pyramid.') -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(exclude))


def _step(model, x):
    outs = model(x)
    outs = outs if isinstance(outs, (tuple, list)) else (outs, )
    sum(o.float().square().mean() for o in outs).backward()
    model.zero_grad(set_to_none=True)


def measure(name: str, model, x):
    """Forward + backward time (s, median of 3 after one warm-up) and the peak memory of a
    step (MiB; measured in a fresh subprocess, as ``benchmark_backbone.py`` does)."""
    import statistics
    import time

    from mmvtx.utils.benchmark import run_memory_worker
    _step(model, x)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        _step(model, x)
        times.append(time.perf_counter() - start)
    mem = run_memory_worker([sys.executable, osp.abspath(__file__), '--memory-worker', name,
                             str(x.shape[-2])])
    return statistics.median(times), mem


def memory_worker(name: str, size: int):
    from mmvtx.utils.benchmark import peak_memory_mib, report_peak
    torch.manual_seed(0)
    model = build(name)
    model.train()
    x = torch.randn(1, 3, size, size)
    report_peak(peak_memory_mib(lambda: _step(model, x), x.device))


def fit_exponent(sizes, values) -> float:
    """Least-squares slope of log(value) against log(pixels) (two distinct sizes or more)."""
    if len(set(sizes)) < 2:
        raise ValueError(f'fit_exponent: sizes {list(sizes)}: a slope needs two distinct sizes')
    xs = [math.log(s * s) for s in sizes]
    ys = [math.log(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)


def cost_curves(models, sizes, flops_only: bool, out_dir: str, ref_max_size: int = 672):
    rows = []
    for name in models:
        torch.manual_seed(0)
        model = build(name)
        for s in sizes:
            x = torch.randn(1, 3, s, s)
            model.eval()  # not chained: mmdet's train()/eval() return None
            total, _ = encoder_flops(model, x)
            model.train()
            skip = flops_only or (name == 'mmseg-vit-b' and s > ref_max_size)
            t, mem = (None, None) if skip else measure(name, model, x)
            rows.append(dict(model=name, size=s, gflops=total / 1e9, time_s=t, memory_mib=mem))
            print(f'{name:14s} {s:5d}px  {total / 2e9:9.2f} GMACs' + (
                '' if t is None else f'  {t:8.3f} s  {mem:9.0f} MiB'), flush=True)
        del model
    from mmvtx.utils.cli import atomic_output
    with atomic_output(osp.join(out_dir, 'cost_vs_resolution.csv')) as tmp, \
            open(tmp, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    fig, fits = draw_cost_curves(rows, models, flops_only)
    with atomic_output(osp.join(out_dir, 'cost_vs_resolution.png')) as tmp:
        fig.savefig(tmp, dpi=120)
    import matplotlib.pyplot as plt
    plt.close(fig)
    for (name, key), k in sorted(fits.items()):
        pts = [(r['size'], r[key]) for r in rows if r['model'] == name and r[key]]
        last = fit_exponent([p[0] for p in pts[-2:]], [p[1] for p in pts[-2:]])
        print(f'exponent {name:14s} {key:10s} k = {k:.2f} (between the two largest sizes: '
              f'{last:.2f})')
    return rows, fits


def draw_cost_curves(rows, models, flops_only: bool):
    """The figure of ``cost_vs_resolution.png`` and the fitted exponents
    ``{(model, metric): k}``. The x axis is marked at the measured sizes (``S²``): matplotlib's
    own log ticks labelled every minor tick where the sizes span less than a decade of pixels
    (``--sizes 97 131``, ``224 448``), the labels printed over each other."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator
    metrics = [('gflops', 'forward GFLOPs (flop_counter)')] + (
        [] if flops_only else [('time_s', 'fwd+bwd time (s)'), ('memory_mib', 'peak memory (MiB)')])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.4), squeeze=False)
    fits = {}
    sizes = sorted({r['size'] for r in rows})
    for ax, (key, label) in zip(axes[0], metrics):
        for name in models:
            pts = [(r['size'], r[key]) for r in rows if r['model'] == name and r[key]]
            if len(pts) < 2:
                continue
            k = fit_exponent([p[0] for p in pts], [p[1] for p in pts])
            fits[(name, key)] = k
            ax.loglog([p[0] ** 2 for p in pts], [p[1] for p in pts], 'o-' if '-' in name and
                      not name.startswith('mm') else 's--', label=f'{name}: k={k:.2f}')
        ax.xaxis.set_major_locator(FixedLocator([s * s for s in sizes]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f'{s}\u00b2' for s in sizes], fontsize=7,
                           rotation=0 if len(sizes) <= 4 else 45)
        ax.set_xlabel('pixels (H x W), at the measured sizes')
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=7)
    fig.suptitle('cost ~ pixels^k (k fitted over the sizes)', fontsize=9)
    fig.tight_layout()
    return fig, fits


def preset_figures(name: str, sizes=((224, 224), )):
    """Parameters (millions) and encoder GMACs at each ``(h, w)`` of ``sizes`` of a preset
    (ViT's simple feature pyramid left out of both)."""
    torch.manual_seed(0)
    model = build(name)
    model.eval()
    gmacs = []
    for h, w in sizes:
        total, pyramid = encoder_flops(model, torch.randn(1, 3, h, w))
        gmacs.append((total - pyramid) / 2e9)
    return params(model) / 1e6, gmacs


def params_flops_table(names, out_dir: str):
    lines = ['| preset | params (M) | GMACs 224x224 | GMACs 1333x800 | published params / GFLOPs '
             '(224) | GMACs vs published |', '|---|---|---|---|---|---|']
    results = {}
    for name in names:
        n, (g224, g_det) = preset_figures(name, ((224, 224), (800, 1333)))
        results[name] = (n, g224, g_det)
        pub = PUBLISHED.get(name)
        lines.append(f'| {name} | {n:.1f} | {g224:.2f} | {g_det:.1f} | ' + (
            f'{pub[0]}M / {pub[1]} G ({pub[2]}) | {g224 / pub[1] - 1:+.1%} |' if pub else
            '- | - |'))
        print(lines[-1], flush=True)
    from mmvtx.utils.cli import atomic_output
    with atomic_output(osp.join(out_dir, 'params_flops.md')) as tmp, open(tmp, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+',
                        help=f'default: {" ".join(CURVE_MODELS)}; with --table every preset')
    parser.add_argument('--sizes', type=int, nargs='+',
                        help=f'square sizes (default: {" ".join(map(str, CURVE_SIZES))})')
    parser.add_argument('--flops-only', action='store_true', help='no time/memory runs')
    parser.add_argument('--ref-max-size', type=int, default=672,
                        help="largest size at which mmseg's ViT is timed (it keeps every "
                        'attention map for backward: about 12 GB at 896 px; FLOPs go on)')
    parser.add_argument('--table', action='store_true',
                        help='params/FLOPs of the presets at 224 and 1333x800 instead')
    parser.add_argument('--out-dir', default='work_dirs/cost_vs_resolution',
                        help='folder of the CSV and the picture, or of params_flops.md (made '
                        'if missing; default work_dirs/cost_vs_resolution)')
    parser.add_argument('--memory-worker', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        return memory_worker(args.memory_worker[0], int(args.memory_worker[1]))
    if args.table and args.sizes:
        parser.error(f'--sizes {args.sizes} with --table: the table is at 224x224 and 1333x800')
    sizes = sorted(set(args.sizes or CURVE_SIZES))
    if not args.table and (sizes[0] < 32 or len(sizes) < 2):
        parser.error(f'--sizes {args.sizes}: give two or more distinct sizes >= 32')
    models = args.models or (list(PRESETS) if args.table else CURVE_MODELS)
    for name in models:
        if name not in PRESETS and name not in ('mmdet-swin-t', 'mmseg-vit-b'):
            parser.error(f'--models {name!r}: expected one of '
                         f'{sorted(PRESETS) + ["mmdet-swin-t", "mmseg-vit-b"]}')
    from mmvtx.utils.cli import check_output_dir
    check_output_dir(parser, args.out_dir, '--out-dir')  # before minutes of measuring
    os.makedirs(args.out_dir, exist_ok=True)
    if args.table:
        params_flops_table(list(dict.fromkeys(models)), args.out_dir)
        print(f'wrote {osp.join(args.out_dir, "params_flops.md")}')
        return
    cost_curves(list(dict.fromkeys(models)), sizes, args.flops_only, args.out_dir,
                args.ref_max_size)
    print(f'wrote {osp.join(args.out_dir, "cost_vs_resolution.csv")}, '
          f'{osp.join(args.out_dir, "cost_vs_resolution.png")}')


if __name__ == '__main__':
    main()
