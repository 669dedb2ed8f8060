# mmseg's own Swin-T UPerNet ADE20K recipe with mmseg's SwinTransformer swapped for mmvtx's.
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmvtx'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.SwinTransformer',
        arch='tiny',
        drop_path_rate=0.3,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
            'swin_tiny_patch4_window7_224.pth')))
