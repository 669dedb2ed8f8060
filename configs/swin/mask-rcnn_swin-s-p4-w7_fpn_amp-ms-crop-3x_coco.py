# Mask R-CNN Swin-S 3x multi-scale + crop COCO with mixed precision: mmdet 48.2 box / 43.2 mask AP
# (paper 48.5 / 43.3). Twin: mmdet::swin/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py, which
# is Swin-T's 3x recipe with AmpOptimWrapper (fp16 autocast, dynamic loss scale) and Swin-S.
_base_ = './mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
pretrained = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_small_patch4_window7_224.pth'  # noqa: E501
model = dict(
    backbone=dict(
        arch='small', drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
optim_wrapper = dict(type='AmpOptimWrapper')
