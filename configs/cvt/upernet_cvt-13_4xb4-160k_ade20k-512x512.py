# UPerNet CvT-13, ADE20K 512x512 160k (Swin-T's recipe). No published result exists.
_base_ = ['../swin/upernet_swin-t-p4-w7_4xb4-160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.CvT',
        arch='13',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='CvT-13-224x224-IN-1k.pth')),
    decode_head=dict(in_channels=[64, 192, 384, 384]),
    auxiliary_head=dict(in_channels=384))
