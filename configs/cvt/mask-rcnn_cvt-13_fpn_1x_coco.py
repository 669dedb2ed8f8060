# Mask R-CNN + FPN with CvT-13 (ImageNet-1k weights from microsoft/CvT), COCO 1x. No published
# detection result exists for CvT (see README.md); the recipe is Swin-T's (AdamW 1e-4, wd 0.05).
_base_ = [
    '../_base_/models/mask-rcnn_swin-t-p4-w7_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime_det.py',
]
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
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'cls_token': dict(decay_mult=0.), 'norm': dict(decay_mult=0.), 'bn': dict(decay_mult=0.)}))
train_dataloader = dict(batch_size=2)  # 8 GPUs x 2
