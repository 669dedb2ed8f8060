# UPerNet Swin-S ADE20K 512x512 160k: mmseg 47.72 mIoU (paper 47.64), single scale.
# Twin: mmseg::swin/swin-small-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py
_base_ = './upernet_swin-t-p4-w7_4xb4-160k_ade20k-512x512.py'
pretrained = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_small_patch4_window7_224.pth'  # noqa: E501
model = dict(backbone=dict(arch='small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
