# UPerNet CvT-13, ADE20K 512x512 160k: Swin-T's recipe with the backbone swapped. No published
# result exists.
_base_ = '../swin/upernet_swin-t-p4-w7_4xb4-160k_ade20k-512x512.py'
pretrained = 'CvT-13-224x224-IN-1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.CvT',
        arch='13',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 192, 384, 384]),
    auxiliary_head=dict(in_channels=384))
# CvT's own no-decay parameters next to the norms of Swin's list ('norm' already catches CvT's
# LayerNorms): the [CLS] token and the BatchNorm of the q/k/v projections (a bare 'bn' key would
# also catch the BatchNorm of UPerNet's heads)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'cls_token': dict(decay_mult=0.),
    'conv_proj_q.bn': dict(decay_mult=0.),
    'conv_proj_k.bn': dict(decay_mult=0.),
    'conv_proj_v.bn': dict(decay_mult=0.)}))
