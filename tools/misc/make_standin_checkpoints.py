"""Write stand-in pretrained checkpoints (RANDOM weights in the exact layout of the public
releases) for every ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (and mmseg's
``model.pretrained=...``) of the given configs, where the recipes will look for them, so that
the unchanged recipes run without network.

    python tools/misc/make_standin_checkpoints.py CONFIG [CONFIG ...] [--out-dir DIR]
    python tools/misc/make_standin_checkpoints.py swin_tiny_patch4_window7_224.pth [...]
    python tools/misc/make_standin_checkpoints.py --list

An argument ending in ``.py`` is a config; any other is a checkpoint URL or file name. The
default ``--out-dir`` is torch's hub cache (``$TORCH_HOME/hub/checkpoints``), where mmvtx
reads URLs and bare file names from: point ``TORCH_HOME`` at a scratch folder to keep the
stand-ins away from your real downloads. Existing files are never replaced (``--overwrite``
replaces them).
"""
import argparse
import os.path as osp
import shlex
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

BANNER = '!' * 96


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description='Write stand-in checkpoints: RANDOM weights in the layout of the public '
                    'releases named by configs, for testing the pipeline without network.')
    parser.add_argument('inputs', nargs='*', metavar='CONFIG_OR_CHECKPOINT',
                        help='config files (.py), or checkpoint URLs / file names')
    parser.add_argument('--out-dir', default=None,
                        help='where to write (default: checkpoint_cache_dir(), i.e. '
                             '$TORCH_HOME/hub/checkpoints, where the recipes look)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random values')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing files (they could be the real downloads)')
    parser.add_argument('--list', action='store_true', help='list the known releases and exit')
    args = parser.parse_args(argv)

    from mmvtx.utils.checkpoint import checkpoint_cache_dir
    from mmvtx.utils.standin import (WARNING, find_release, is_standin_checkpoint,
                                     known_releases, pretrained_checkpoints,
                                     write_standin_checkpoint, write_standins_for_config)
    if args.list:
        for r in known_releases():
            print(f'{r.name:52s} {r.source:28s} {r.description}')
        return 0
    if not args.inputs:
        parser.error('give config files or checkpoint names (or --list)')
    out_dir = args.out_dir or checkpoint_cache_dir()

    # check everything first: nothing is written if a name is unknown or out_dir unusable
    from mmvtx.utils.cli import output_dir_problem
    problem = output_dir_problem(out_dir)  # a file, a file on the way to it, no permission
    if problem:
        print(f'error: --out-dir {out_dir} {problem}', file=sys.stderr)
        return 1
    configs = [a for a in args.inputs if a.endswith('.py')]
    names = [a for a in args.inputs if not a.endswith('.py')]
    try:
        wanted = {c: pretrained_checkpoints(c) for c in configs}
        # a name given here must be a release's (a local file of another name has no stand-in);
        # a config's local file is the user's own and is left alone
        for ckpt in names + [c for cs in wanted.values() for c in cs
                             if c.startswith(('http://', 'https://')) or
                             not osp.isfile(osp.expanduser(c))]:
            find_release(ckpt)  # raises, naming the file, if no release has that name
    except (ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    for config, ckpts in wanted.items():
        print(f'{config}: ' + (', '.join(ckpts) if ckpts else 'no Pretrained checkpoint'))

    written = []
    try:
        for config in configs:
            written += write_standins_for_config(config, out_dir, seed=args.seed,
                                                 overwrite=args.overwrite)
        for name in names:
            path = osp.join(out_dir, find_release(name).name)
            if path in written or (osp.exists(path) and not args.overwrite):
                if path not in written:
                    kind = 'a stand-in' if is_standin_checkpoint(path) else 'NOT a stand-in'
                    print(f'kept {path} ({kind}; --overwrite replaces it)')
                continue
            written.append(write_standin_checkpoint(name, out_dir, seed=args.seed,
                                                    overwrite=args.overwrite))
    except (ValueError, OSError) as e:  # e.g. a folder that cannot be created or written
        print(f'error: {e}', file=sys.stderr)
        for path in written:
            print(f'wrote {path} before the error (RANDOM WEIGHTS)', file=sys.stderr)
        return 1

    for path in written:
        release = find_release(osp.basename(path))
        note = '' if release.published else '  (no public release of this name is known)'
        print(f'wrote {path}  [{release.description}]{note}')
    if written:
        print(BANNER)
        print(f'!!! {WARNING}')
        print(f'!!! {len(written)} file(s) in {out_dir}. Remove them with:')
        print('!!!   rm ' + ' '.join(shlex.quote(p) for p in written))
        print(BANNER)
    else:
        print('nothing written')
    return 0


if __name__ == '__main__':
    sys.exit(main())
