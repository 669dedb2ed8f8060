# The twin of configs/vit/mask-rcnn_vit-b-p16_sfp_16xb4-amp-lsj-100e_coco.py: detectron2's ViTDet
# recipe, projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py (ViT-B, MAE weights; 51.6 box /
# 45.9 mask AP), written out in mmdet 3.3's config vocabulary so that tests/configs/
# test_recipe_fidelity.py can compare mmvtx's recipe with it field by field. Each setting names the
# detectron2 line it stands for ("d2: ..."); everything not set here is mmdet's Mask R-CNN R-50 FPN,
# COCO instance data and default runtime, the parts both codebases share. Where mmdet's own port
# (mmdetection/projects/ViTDet, not in the installed package) has a module for it, its type names
# are used (ViT, SimpleFPN, LN2d, LayerDecayOptimizerConstructor, Fp16CompresssionHook): this file
# is parsed, never built.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py',
]
image_size = (1024, 1024)
# d2: norm="LN" on the pyramid's and the heads' convolutions: LayerNorm over channels, eps 1e-6
norm_cfg = dict(type='LN2d', requires_grad=True)
model = dict(
    # d2: pixel_mean/std = imagenet_rgb256 (mmdet's values), input_format RGB (bgr_to_rgb);
    # SimpleFeaturePyramid(square_pad=1024) pads the normalised batch with zeros to 1024x1024
    data_preprocessor=dict(
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        _delete_=True,
        type='ViT',
        img_size=1024,
        pretrain_img_size=224,  # d2 default: abs pos table of the 224 grid, resized (get_abs_pos)
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        drop_path_rate=0.1,
        window_size=14,
        mlp_ratio=4,
        qkv_bias=True,
        norm_cfg=dict(type='LN', eps=1e-6),
        window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10],  # d2: "2, 5, 8 11 for global attention"
        residual_block_indexes=[],
        use_rel_pos=True,
        use_abs_pos=True,
        pretrain_use_cls_token=True,  # the checkpoint's [CLS] position is dropped; no [CLS] token,
        # and no LayerNorm after the last block
        init_cfg=dict(
            type='Pretrained',
            checkpoint='detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth')),
    # d2: SimpleFeaturePyramid(scale_factors=(4.0, 2.0, 1.0, 0.5), out_channels=256, norm="LN",
    # top_block=LastLevelMaxPool): per level deconvs/pool, then 1x1 conv + LN, 3x3 conv + LN
    neck=dict(
        _delete_=True,
        type='SimpleFPN',
        backbone_channel=768,
        in_channels=[192, 384, 768, 768],
        out_channels=256,
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),  # d2: proposal_generator.head.conv_dims = [-1, -1]
    roi_head=dict(
        # d2: box_head conv_dims [256] * 4, fc_dims [1024], conv_norm "LN"
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))  # d2: mask_head.conv_norm "LN"

backend_args = None
# d2 coco_loader_lsj: RandomFlip first, ResizeScale(0.1, 2.0, 1024x1024), FixedSizeCrop(1024,
# pad=False), recompute_boxes=True; DatasetMapper drops instances with a side <= 1e-5
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
# d2: ResizeShortestEdge(1024, max_size=1024), then the model's square_pad to 1024 with zeros
# after normalisation, i.e. the mean pixel before it (BGR, as the image is loaded)
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='mmvtx.PadKeepImgShape', size=image_size,
         pad_val=dict(img=(103.53, 116.28, 123.675))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
# d2: total_batch_size 64 (16 GPUs x 4 here), num_workers 4, aspect-ratio grouping
train_dataloader = dict(batch_size=4, num_workers=4, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=4, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# d2 common/optim.py AdamW(lr 1e-4, betas (0.9, 0.999), wd 0.1, weight_decay_norm 0) with
# lr_factor_func = get_vit_lr_decay_rate(num_layers=12, lr_decay_rate=0.7), no decay on pos_embed;
# train.amp.enabled = True
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.7, decay_type='layer_wise', num_layers=12),
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.1))
# d2: max_iter 184375 (100 epochs of 64 images), MultiStep at 163889 / 177546 (x0.1 each),
# linear warmup over 250 iterations from 0.001
max_iters = 184375
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False,
         milestones=[163889, 177546], gamma=0.1)
]
# d2 common/train.py: eval_period 5000, checkpointer period 5000 / max_to_keep 100
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=5000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=100))
log_processor = dict(by_epoch=False)
# d2: train.ddp.fp16_compression = True (gradients all-reduced in fp16)
custom_hooks = [dict(type='Fp16CompresssionHook')]
auto_scale_lr = dict(base_batch_size=64)
