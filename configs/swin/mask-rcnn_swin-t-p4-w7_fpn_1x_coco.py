# Mask R-CNN Swin-T 1x COCO: mmdet 42.7 box / 39.3 mask AP; paper 43.7 / 39.8 (see README.md).
# Twin: mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py, equal outside the backbone but for the
# differences README.md lists (tests/configs/test_recipe_fidelity.py checks it).
_base_ = [
    '../_base_/models/mask-rcnn_swin-t-p4-w7_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime_det.py',
]
# the authors' ImageNet-1k release; mmdet/mmseg/timm/transformers Swin-T checkpoints load too
pretrained = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth'  # noqa: E501
model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.2,
        always_shift=True,  # mmdet's Swin shifts every SW-MSA block (the authors' weights load)
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
# 8 GPUs x 2 images; AdamW lr 1e-4, wd 0.05, none on relative position tables and norms
train_dataloader = dict(batch_size=2)
