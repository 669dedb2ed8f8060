"""Draw Swin's windows, the cyclic shift, the nine regions and the SW-MSA attention mask for a
map size and window size, and the relative position index and one head's relative position
bias (from a config and checkpoint, or the table's initialisation).

    python tools/analysis_tools/draw_windows.py --map 14 14 --window 7 [--shift 3] \\
        [--always-shift | --config CONFIG [--checkpoint CKPT] --block stages.0.blocks.1 \\
        --head 0] [--out DIR]

Writes ``windows.png`` (the padded token map tiled into windows; the same map after the cyclic
shift by ``-shift``, coloured by the nine regions of the Swin paper, with the windows it is cut
into; the ``nW x N x N`` mask, 0 within a region and -100 across) and
``relative_position.png`` (the ``N x N`` relative position index into the
``(2M-1)^2``-row bias table, and one head's ``N x N`` bias ``B``). The mask and the index come
from the functions the backbone itself uses (``mmvtx/models/layers/window.py``,
``relative_position_index`` of ``mmvtx/models/backbones/swin.py``). Whether the SW-MSA blocks
shift at all is the stage's own rule (``SwinStage.geometry``): by the authors' rule a map no
larger than a window (``min(H, W) <= window``) is not shifted, and then only the windows are
drawn, the figure and the log saying so; ``--always-shift`` draws mmdet's rule (every SW-MSA
block shifts), and with ``--config`` the rule of the config's backbone (and checkpoint) is drawn.
"""
import argparse
import os
import os.path as osp
import sys
import textwrap

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

GAP_COLOUR = '#4a90d9'  # between the windows of the mask panel


def window_figures(H: int, W: int, M: int, shift: int):
    """What the pictures show, from the backbone's own functions: the padded map size, the
    window id of every token (unshifted), the region of every token of the shifted map, and the
    SW-MSA mask (``nW x N x N``, or None without shift)."""
    from mmvtx.models.layers.padding import padded
    from mmvtx.models.layers.window import WindowGeometryCache, shifted_region_map
    Hp, Wp = padded(H, M), padded(W, M)
    window_id = (torch.arange(Hp)[:, None] // M) * (Wp // M) + torch.arange(Wp)[None] // M
    regions = shifted_region_map(Hp, Wp, M, shift) if shift else torch.zeros(Hp, Wp,
                                                                             dtype=torch.long)
    geo = WindowGeometryCache().get(H, W, M, shift, torch.device('cpu'))
    return (Hp, Wp), window_id, regions, geo.mask


def stage_shift(H: int, W: int, M: int, shift: int, always_shift: bool) -> int:
    """The shift of the SW-MSA blocks of a Swin stage with windows of ``M`` on an ``H x W``
    map: ``shift``, or 0 where the stage's rule (``SwinStage.geometry``) does not shift."""
    from mmvtx.models.backbones.swin import SwinStage
    stage = SwinStage(8, 2, 1, M, drop_paths=[0.0, 0.0], downsample=False,
                      always_shift=always_shift)
    return shift if stage.geometry(H, W, torch.device('cpu')).shift_size else 0


def _window_lines(ax, Hp, Wp, M):
    for t in range(0, Hp + 1, M):
        ax.axhline(t - 0.5, color='k', lw=1.5)
    for t in range(0, Wp + 1, M):
        ax.axvline(t - 0.5, color='k', lw=1.5)


def draw_windows(H, W, M, shift, out_file, note: str = ''):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    (Hp, Wp), window_id, regions, mask = window_figures(H, W, M, shift)
    panels = 3 if mask is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.4), squeeze=False)
    ax = axes[0][0]
    ax.imshow(window_id % 10, cmap='tab10', vmin=0, vmax=9, alpha=0.55)
    if Hp > H or Wp > W:
        ax.add_patch(plt.Rectangle((-0.5, H - 0.5), Wp, Hp - H, hatch='//', fill=False,
                                   color='grey'))
        ax.add_patch(plt.Rectangle((W - 0.5, -0.5), Wp - W, Hp, hatch='//', fill=False,
                                   color='grey'))
    _window_lines(ax, Hp, Wp, M)
    ax.set_title(f'{H}x{W} tokens (padded {Hp}x{Wp}), {Hp // M * (Wp // M)} windows of {M}x{M}'
                 '\nW-MSA' + (f'\n{note}' if note else ''), fontsize=8)
    if mask is not None:
        ax = axes[0][1]
        ax.imshow(regions, cmap='tab10', vmin=0, vmax=9, alpha=0.6)
        for r in range(9):
            ys, xs = np.nonzero((regions == r).numpy())
            if len(ys):
                ax.text(xs.mean(), ys.mean(), str(r), ha='center', va='center', fontsize=10,
                        weight='bold')
        _window_lines(ax, Hp, Wp, M)
        ax.set_title(f'after the cyclic shift by -{shift}: nine regions\nSW-MSA windows '
                     '(rolled back by +shift after attention)', fontsize=8)
        ax = axes[0][2]
        nW, N = mask.shape[0], mask.shape[1]
        cols = Wp // M
        grid = torch.full(((nW + cols - 1) // cols * (N + 2), cols * (N + 2)), float('nan'))
        for w in range(nW):
            r, c = divmod(w, cols)
            grid[r * (N + 2):r * (N + 2) + N, c * (N + 2):c * (N + 2) + N] = mask[w]
        # the gaps between the windows' N x N squares in a colour of their own: white (NaN's
        # default) made the all-0 windows one white area, the windows impossible to tell apart
        cmap = plt.get_cmap('gray').copy()
        cmap.set_bad(GAP_COLOUR)
        ax.imshow(grid, cmap=cmap, vmin=-100, vmax=0)
        ax.set_title(f'attention mask, {nW} x {N} x {N}: one square per window\n(white 0: same '
                     'region; black -100; blue: between windows)', fontsize=8)
    for a in axes[0]:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    save_whole(fig, out_file)


def save_whole(fig, out_file: str):
    """Saves ``fig`` with every title and label inside the picture: ``tight_layout`` lays the
    square image panels out before their aspect is applied, and the panels grew into the space
    it left for their titles (the first title line was cut off at the top)."""
    import matplotlib.pyplot as plt

    from mmvtx.utils.cli import atomic_output
    with atomic_output(out_file) as tmp:  # never a cut-off picture under the final name
        fig.savefig(tmp, dpi=120, bbox_inches='tight', pad_inches=0.1)
    plt.close(fig)


def draw_relative_position(M, table, out_file, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from mmvtx.models.backbones.swin import get_relative_position_index
    index = get_relative_position_index(M).view(M * M, M * M)
    bias = table[index.view(-1)].view(M * M, M * M)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.3))
    im = axes[0].imshow(index, cmap='viridis')
    axes[0].set_title(f'relative position index ({M * M} x {M * M}) into the '
                      f'{(2 * M - 1) ** 2}-row table', fontsize=8)
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    im = axes[1].imshow(bias.detach(), cmap='RdBu_r')
    axes[1].set_title(title, fontsize=8)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    for a in axes:
        a.set_xlabel('key token of the window')
        a.set_ylabel('query token')
    fig.tight_layout()
    save_whole(fig, out_file)
    return index, bias


def main(argv=None):
    from mmengine.config import DictAction  # light: not mmvtx, which --help would wait for
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--map', type=int, nargs=2, default=[14, 14], metavar=('H', 'W'),
                        help='token map size (default 14 14: Swin stage 3 at 224)')
    parser.add_argument('--window', type=int,
                        help="window size (default 7; with --config: the block's own)")
    parser.add_argument('--shift', type=int, help='default: window // 2')
    parser.add_argument('--always-shift', action='store_true',
                        help="shift even where min(map) <= window (mmdet's rule; default: the "
                        "authors' rule, no shift there; with --config: the backbone's rule)")
    parser.add_argument('--config', help='a config with an mmvtx Swin (for its bias table and '
                        'shift rule)')
    parser.add_argument('--checkpoint', help="weights of --config's model or backbone, whose "
                        'bias table is drawn (default: the initialisation)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='with --config: override config entries before the model is '
                        'built, e.g. model.backbone.window_size=12')
    parser.add_argument('--block', default='stages.0.blocks.1',
                        help='with --config: the block whose bias table is drawn (default '
                        'stages.0.blocks.1)')
    parser.add_argument('--head', type=int, default=0,
                        help="with --config: the head of the block's bias drawn (default 0)")
    parser.add_argument('--out', default='work_dirs/windows',
                        help='folder of windows.png and relative_position.png (made if '
                        'missing; default work_dirs/windows)')
    args = parser.parse_args(argv)
    H, W = args.map
    if args.checkpoint and not args.config:
        parser.error(f'--checkpoint {args.checkpoint} needs --config (the model it belongs to)')
    if args.cfg_options and not args.config:
        parser.error('--cfg-options needs --config (the config it changes)')
    if args.always_shift and args.config:
        parser.error('--always-shift with --config: the rule of the config\'s backbone is drawn '
                     '(set it with --cfg-options model.backbone.always_shift=True)')
    always, rule = args.always_shift, "--always-shift: mmdet's rule" if args.always_shift else \
        "the authors' rule; --always-shift for mmdet's"
    from mmvtx.utils.cli import check_output_dir
    check_output_dir(parser, args.out, '--out')  # before the model is built
    attn = None
    if args.config:
        from mmvtx.utils.attention_analysis import build_backbone_for_tool
        backbone, _ = build_backbone_for_tool(parser, args.config, args.checkpoint,
                                              ('--config', '--checkpoint'), args.cfg_options)
        # a value that does not fit the config's model is refused as argparse refuses a bad
        # flag (it had stopped with a ValueError traceback)
        if not hasattr(backbone, 'shifts_every_block'):
            parser.error(f'--config {args.config}: its backbone, {type(backbone).__name__}, '
                         'is not an mmvtx Swin')
        blocks = [name[:-len('.attn')] for name, m in backbone.named_modules()
                  if name.endswith('.attn') and hasattr(m, 'relative_position_bias_table')]
        attn = dict(backbone.named_modules()).get(args.block + '.attn')
        if args.block not in blocks:
            parser.error(f'--block {args.block}: not a Swin block of {args.config} (its blocks: '
                         f'{blocks[0]} ... {blocks[-1]})')
        if not 0 <= args.head < attn.num_heads:
            parser.error(f'--head {args.head}: {args.block} has {attn.num_heads} heads '
                         f'(0 to {attn.num_heads - 1})')
        if args.window is not None and args.window != attn.window_size:
            parser.error(f'--window {args.window}: {args.block} of {args.config} has windows '
                         f'of {attn.window_size} (leave --window out to draw its own)')
        always = backbone.shifts_every_block
        rule = f'the rule of the backbone of {osp.basename(args.config)}' + (
            ' and the checkpoint' if args.checkpoint else '')
    M = attn.window_size if attn is not None else 7 if args.window is None else args.window
    shift = M // 2 if args.shift is None else args.shift
    if min(H, W) < 1 or M < 1:
        parser.error(f'--map {H} {W} --window {M}: sizes must be >= 1')
    if not 0 <= shift < M:
        parser.error(f'--shift {shift}: must be in [0, window={M})')
    os.makedirs(args.out, exist_ok=True)
    used = stage_shift(H, W, M, shift, always)
    note = '' if used or not shift else (
        f'SW-MSA blocks do not shift: min(H, W) = {min(H, W)} <= window {M} ({rule})')
    if note:
        print(note)
    draw_windows(H, W, M, used, osp.join(args.out, 'windows.png'),
                 '\n'.join(textwrap.wrap(note, 60)))
    if attn is not None:
        table = attn.relative_position_bias_table[:, args.head]
        title = (f'bias B of head {args.head}, {args.block} '
                 f'({"checkpoint" if args.checkpoint else "initialisation"})')
    else:
        torch.manual_seed(0)
        table = torch.randn((2 * M - 1) ** 2) * 0.02
        title = 'bias B of a randomly initialised table (pass --config for a model\'s)'
    draw_relative_position(M, table, osp.join(args.out, 'relative_position.png'), title)
    print(f'window {M}, shift {used}: wrote {osp.join(args.out, "windows.png")}, '
          f'{osp.join(args.out, "relative_position.png")}')


if __name__ == '__main__':
    main()
