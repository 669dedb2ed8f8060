# Mask R-CNN with a small ViT (patch 16, 128 wide, 6 layers) and its built-in simple feature
# pyramid, from scratch on the embedded shapes scenes on a CPU. Differs from the Swin config
# only in the backbone dict and the neck's in_channels.
_base_ = '../swin/mask-rcnn_swin-mini-p4-w7_fpn_700i_shapes.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.ViT',
        arch='base',
        embed_dims=128,
        num_layers=6,
        num_heads=4,
        img_size=256,
        drop_path_rate=0.1),
    neck=dict(in_channels=[32, 64, 128, 128]))
