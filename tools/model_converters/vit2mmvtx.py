"""Convert a public ViT checkpoint to mmvtx names, offline (the same conversion that
``init_cfg=dict(type='Pretrained', checkpoint=...)`` does at load time).

    python tools/model_converters/vit2mmvtx.py SRC DST [--arch base] [--options '{...}']
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmvtx.utils.convert_cli import convert_main  # noqa: E402

if __name__ == '__main__':
    convert_main('ViT', 'base')
