# The README's demo: Mask R-CNN with a small Swin (48 channels) trained from scratch on the
# embedded shapes scenes in a few minutes on a 2-core CPU (64-channel heads, 128 RoI samples).
_base_ = [
    '../_base_/models/mask-rcnn_swin-t-p4-w7_fpn.py',
    '../_base_/datasets/shapes_instance.py',
    '../_base_/default_runtime_det.py',
]
num_classes = 3
model = dict(
    backbone=dict(
        embed_dims=48,  # arch='tiny' (heads 3/6/12/24) cut to 48 channels, 2 blocks a stage
        depths=(2, 2, 2, 2),
        drop_path_rate=0.1),
    neck=dict(in_channels=[48, 96, 192, 384], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        # 2x2 samples a bin instead of adaptive: RoIAlign was a quarter of a CPU step
        bbox_roi_extractor=dict(out_channels=64, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=num_classes,
                       reg_decoded_bbox=True, loss_bbox=dict(type='GIoULoss', loss_weight=10.0)),
        mask_roi_extractor=dict(out_channels=64, roi_layer=dict(sampling_ratio=2)),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(max_per_img=20)))

max_iters = 700
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, eta_min=1e-5),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10.0))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=200, max_keep_ckpts=2))
log_processor = dict(type='LogProcessor', window_size=25, by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
