# Mask R-CNN + FPN with CvT-13 (ImageNet-1k weights from microsoft/CvT), COCO 1x. No published
# detection result exists for CvT (see README.md): the recipe is Swin-T's 1x with the backbone
# swapped; tests/configs/test_recipe_fidelity.py checks that nothing else differs but the
# differences README.md lists.
_base_ = '../swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
# the authors' release (their QuickGELU is switched on when it loads); transformers'
# microsoft/cvt-13 weights load too
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
