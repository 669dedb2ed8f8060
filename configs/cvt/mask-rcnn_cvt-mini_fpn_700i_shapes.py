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
        drop_path_rate=0.1,
        out_norms=True),
    neck=dict(in_channels=[32, 96, 192, 192]))
# CvT from scratch diverged at lr 1e-3 after the 50-iteration warmup (loss spike at ~100
# iterations, then a dead network): half the rate and a longer warmup.
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end={{_base_.max_iters}},
         eta_min=1e-5),
]
