# UPerNet with the small CvT of the Mask R-CNN shapes config, on the shapes label maps.
_base_ = '../swin/upernet_swin-mini-p4-w7_1000i_shapes-256x256.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.CvT',
        arch='13',
        embed_dims=(32, 96, 192),
        depths=(1, 2, 4),
        drop_path_rate=0.1),
    decode_head=dict(in_channels=[32, 96, 192, 192]),
    auxiliary_head=dict(in_channels=192))
