# ViTDet Mask R-CNN with ViT-B/16 (MAE ImageNet-1k weights): window attention 14 with global
# blocks 2/5/8/11, decomposed relative positions, the simple feature pyramid, LSJ 1024, layer
# decay 0.7, drop path 0.1, 64 images a step (16 GPUs x 4), mixed precision, 184375 iterations
# (100 epochs).
# Published (detectron2 ViTDet): 51.6 box / 45.9 mask AP. Twin: detectron2's
# projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py, written out in mmdet's vocabulary in
# tests/configs/twins/detectron2_vitdet_mask-rcnn_vit-b_100ep.py; README.md lists the differences.
_base_ = [
    '../_base_/models/mask-rcnn_swin-t-p4-w7_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/default_runtime_det.py',
]
image_size = (1024, 1024)
# MAE's ViT-B release (timm layout); the JAX .npz, transformers, mmseg/mmpretrain formats load too
pretrained = 'https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth'
model = dict(
    # detectron2 pads every training batch to 1024x1024 with zeros after normalisation
    data_preprocessor=dict(batch_augments=[dict(type='BatchFixedSizePad', size=image_size,
                                                 pad_mask=True)]),
    backbone=dict(
        _delete_=True,
        type='mmvtx.ViT',
        arch='vitdet-b',  # the preset spells out below what it sets
        img_size=224,  # MAE's 14x14 position table, resized to each input's grid
        drop_path_rate=0.1,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        # decomposed relative positions in every block, learned for the window (14) or the
        # 64x64 grid of 1024 px (global blocks); MAE has none: they start at zero, as ViTDet's
        use_rel_pos=True,
        rel_pos_img_size=1024,
        with_cls_token=False,
        final_norm=False,  # detectron2's ViT has none (MAE's norm.* is then left out)
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768, 768]),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256,
                       norm_cfg=dict(type='GN', num_groups=32)),
        mask_head=dict(norm_cfg=dict(type='GN', num_groups=32))))
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-5, 1e-5)),
    dict(type='PackDetInputs')
]
# detectron2 pads test images to 1024x1024 too (zeros after normalisation: the mean pixel before
# it, BGR as loaded), so the position embedding is resized to the grid it was trained on
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='mmvtx.PadKeepImgShape', size=image_size,
         pad_val=dict(img=(103.53, 116.28, 123.675))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(batch_size=4, num_workers=4,
                        dataset=dict(pipeline=train_pipeline))  # 16 GPUs x 4 = 64 images
val_dataloader = dict(num_workers=4, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# AdamW lr 1e-4, wd 0.1 (none on norms, biases, position embedding), layer decay 0.7
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='mmvtx.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7),
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.1))
max_iters = 184375  # 100 epochs at 64 images a step
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=5000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False,
         milestones=[163889, 177546], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=5000, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(base_batch_size=64)
