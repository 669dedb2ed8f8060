"""Shared command line of ``tools/model_converters/*2mmvtx.py``: read a public checkpoint,
convert it exactly as ``init_cfg=dict(type='Pretrained')`` would, and save mmvtx's names."""
import argparse
import json
import os.path as osp

import torch


def convert_main(backbone_type: str, default_arch: str, argv=None):
    parser = argparse.ArgumentParser(
        description=f'Convert a public {backbone_type} checkpoint to mmvtx names (offline)')
    parser.add_argument('src', help='checkpoint: .pth/.pt/.bin/.ckpt/.safetensors/.npz')
    parser.add_argument('dst', help='output file (.pth, or .safetensors)')
    parser.add_argument('--arch', default=default_arch, help='preset of the target model')
    parser.add_argument('--options', default='{}',
                        help='JSON of other constructor arguments, e.g. \'{"window_size": 12}\'')
    parser.add_argument('--prefix', default=None,
                        help='take the keys under this prefix (default: backbone. if present)')
    args = parser.parse_args(argv)

    import mmvtx  # noqa: F401
    from mmvtx.registry import MODELS
    from mmvtx.utils.checkpoint import load_backbone_checkpoint
    model = MODELS.build(dict(type=backbone_type, arch=args.arch, **json.loads(args.options)))
    converted = load_backbone_checkpoint(model, args.src, prefix=args.prefix)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if args.dst.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file(sd, args.dst)
    else:
        torch.save({'state_dict': sd, 'meta': {'converted_from': converted.source,
                                               'source_file': osp.basename(args.src)}},
                   args.dst)
    print(f'{args.src} ({converted.source}) -> {args.dst}: {len(sd)} tensors')
    if backbone_type == 'CvT' and converted.source == 'official':
        print("note: the authors' CvT models use QuickGELU: build the model that loads this "
              "file with act='quick_gelu'")
