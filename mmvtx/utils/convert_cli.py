"""Shared command line of ``tools/model_converters/*2mmvtx.py``: read a public checkpoint,
convert it exactly as ``init_cfg=dict(type='Pretrained')`` would, and save mmvtx's names."""
import argparse
import json
import os
import os.path as osp

import torch

OUTPUT_FORMATS = ('.pth', '.pt', '.safetensors')  # torch.save (a zip), or safetensors
# --options examples that each backbone takes, and that change what the converted file holds
# (the window's bias tables, the position table's grid, the patch embedding's channels): one
# example for all had named Swin's window_size, which CvT refuses
OPTIONS_EXAMPLES = {'SwinTransformer': '{"window_size": 12}', 'ViT': '{"img_size": 384}',
                    'CvT': '{"in_channels": 1}'}


def _check_output(parser: argparse.ArgumentParser, src: str, dst: str):
    """Refuses before converting: an output format it cannot write, a folder, the input."""
    ext = osp.splitext(dst)[1].lower()
    if ext not in OUTPUT_FORMATS:
        parser.error(f'{dst}: the output must end in .pth or .pt (torch.save) or .safetensors, '
                     f'not {ext or "no extension"!r}')
    if osp.isdir(dst):
        parser.error(f'{dst} is a folder: name the output file')
    from mmvtx.utils.cli import output_file_problem
    problem = output_file_problem(dst)  # a file on the way to it, no permission
    if problem:
        parser.error(f'{dst}: {problem}')
    if osp.realpath(dst) == osp.realpath(src):
        parser.error(f'{dst} is the input file: write the converted checkpoint to another file')


def _parse_options(parser: argparse.ArgumentParser, text: str, arch: str,
                   example: str = OPTIONS_EXAMPLES['SwinTransformer']) -> dict:
    """The constructor arguments of ``--options`` (a JSON object) with the preset: refused
    naming the text when it is not a JSON object, or when it sets ``arch`` beside ``--arch``."""
    try:
        options = json.loads(text)
    except ValueError as e:
        parser.error(f'--options {text}: not valid JSON ({e}); write the names in double '
                     f'quotes, e.g. \'{example}\'')
    if not isinstance(options, dict):
        parser.error(f'--options {text}: must be a JSON object of constructor arguments, e.g. '
                     f'\'{example}\'')
    if 'arch' in options and arch is not None:
        parser.error(f'--options {text} sets arch, and so does --arch {arch}: give one')
    return dict(options, arch=options.get('arch', arch))


def convert_main(backbone_type: str, default_arch: str, argv=None):
    parser = argparse.ArgumentParser(
        description=f'Convert a public {backbone_type} checkpoint to mmvtx names (offline)')
    parser.add_argument('src', help='checkpoint: .pth/.pt/.bin/.ckpt/.safetensors/.npz, or an '
                        'mmengine training checkpoint (its backbone. weights are taken)')
    parser.add_argument('dst', help='output file (.pth/.pt, or .safetensors); its folder is '
                        'created')
    parser.add_argument('--arch', help=f'preset of the target model (default {default_arch})')
    example = OPTIONS_EXAMPLES.get(backbone_type, OPTIONS_EXAMPLES['SwinTransformer'])
    parser.add_argument('--options', default='{}',
                        help=f'JSON of other constructor arguments, e.g. \'{example}\'')
    parser.add_argument('--prefix', default=None,
                        help='take the keys under this prefix (default: backbone. if present)')
    args = parser.parse_args(argv)
    options = _parse_options(parser, args.options, args.arch, example)
    options['arch'] = options['arch'] or default_arch

    import mmvtx  # noqa: F401
    from mmvtx.engine.safe_load import allow_mmengine_checkpoints
    from mmvtx.registry import MODELS
    from mmvtx.utils.checkpoint import (CheckpointMismatchError, CheckpointReadError,
                                        load_backbone_checkpoint, resolve_checkpoint_path)
    from mmvtx.utils.standin import WARNING, mark_standin, standin_info
    try:
        src = resolve_checkpoint_path(args.src)
    except (FileNotFoundError, CheckpointReadError) as e:  # one shard without its index
        parser.exit(1, f'error: {e}\n')
    _check_output(parser, src, args.dst)
    try:  # a preset or constructor argument the backbone refuses, named as the model says
        model = MODELS.build(dict(type=backbone_type, **options))
    except (ValueError, TypeError) as e:
        given = [f'--arch {options["arch"]}'] if args.arch or args.options == '{}' else []
        if args.options != '{}':
            given.append(f'--options {args.options}')
        parser.error(f'{" ".join(given)}: {e}')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    # mmengine's training checkpoints (HistoryBuffer, numpy scalars in meta) under
    # torch.load(weights_only=True), as tools/train.py and tools/test.py read them
    allow_mmengine_checkpoints()
    try:
        converted = load_backbone_checkpoint(model, src, prefix=args.prefix)
    except CheckpointMismatchError as e:  # another architecture's file, another size: named
        parser.exit(1, f'error: {args.src}: {e}\n')
    except (CheckpointReadError, FileNotFoundError) as e:  # cut off, damaged; a missing shard
        parser.exit(1, f'error: {e}\n')
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    standin = standin_info(src)
    from mmvtx.utils.cli import atomic_output
    # written whole under a temporary name, then renamed: an interrupted run leaves no cut-off
    # file, and no stand-in without its mark, under the output's name
    with atomic_output(args.dst) as tmp:
        if args.dst.lower().endswith('.safetensors'):
            from safetensors.torch import save_file
            save_file(sd, tmp)
        else:
            torch.save({'state_dict': sd, 'meta': {'converted_from': converted.source,
                                                   'source_file': osp.basename(args.src)}},
                       tmp)
            if standin:  # loading the converted file still warns that these are random weights
                mark_standin(tmp, dict(standin, converted_to=backbone_type))
    if args.dst.lower().endswith('.safetensors'):
        if standin:
            print(f'warning: {args.src} is a STAND-IN with random weights; a .safetensors '
                  f'file cannot carry its mark, so loading {args.dst} will not say so. '
                  f'{WARNING}')
    print(f'{args.src} ({converted.source}) -> {args.dst}: {len(sd)} tensors')
    if backbone_type == 'CvT' and converted.source == 'official':
        print("note: the authors' CvT models use QuickGELU; the file records it (mlp_act), so "
              "a CvT built with act='auto' (the default) computes with it")
