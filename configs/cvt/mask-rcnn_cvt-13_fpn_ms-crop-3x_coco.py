# Mask R-CNN CvT-13, 3x multi-scale + crop (Swin-T's 3x recipe). No published result exists.
_base_ = ['../swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']
pretrained = 'CvT-13-224x224-IN-1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.CvT',
        arch='13',
        drop_path_rate=0.1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 192, 384, 384]))
