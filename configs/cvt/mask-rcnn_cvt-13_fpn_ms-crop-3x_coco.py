# Mask R-CNN CvT-13, 3x multi-scale + crop: Swin-T's 3x recipe with the backbone swapped, as the
# 1x config. No published result exists.
_base_ = '../swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
pretrained = 'CvT-13-224x224-IN-1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.CvT',
        arch='13',
        drop_path_rate=0.1,
        norm_eval=True,  # BatchNorm of the convolutional projections, at 2 images a GPU
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 192, 384, 384]))
# CvT's own no-decay parameters next to the norms of Swin's list ('norm' already catches CvT's
# LayerNorms): the [CLS] token and the BatchNorm of the q/k/v projections (a bare 'bn' key would
# also catch the BatchNorm of UPerNet's heads)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'cls_token': dict(decay_mult=0.),
    'conv_proj_q.bn': dict(decay_mult=0.),
    'conv_proj_k.bn': dict(decay_mult=0.),
    'conv_proj_v.bn': dict(decay_mult=0.)}))
