# Mask R-CNN with a small CvT (CvT-13 cut to 32/96/192 channels and 1/2/4 blocks), from scratch
# on the embedded shapes scenes on a CPU. Differs from the Swin config only in the backbone dict
# and the neck's in_channels (the stride-32 level is a max-pool of the stride-16 stage).
_base_ = '../swin/mask-rcnn_swin-mini-p4-w7_fpn_700i_shapes.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.CvT',
        arch='13',
        embed_dims=(32, 96, 192),
        depths=(1, 2, 4),
        drop_path_rate=0.1),
    neck=dict(in_channels=[32, 96, 192, 192]))
