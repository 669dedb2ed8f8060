# UPerNet with the small ViT of the Mask R-CNN shapes config, on the shapes label maps.
_base_ = '../swin/upernet_swin-mini-p4-w7_1000i_shapes-256x256.py'
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
    decode_head=dict(in_channels=[32, 64, 128, 128]),
    auxiliary_head=dict(in_channels=128))
