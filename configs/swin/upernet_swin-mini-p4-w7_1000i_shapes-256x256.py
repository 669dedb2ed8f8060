# UPerNet with a small Swin (48 channels) on the embedded shapes label maps, from scratch on a
# 2-core CPU in minutes (64-channel heads, BN instead of SyncBN).
_base_ = [
    '../_base_/models/upernet_swin-t-p4-w7.py',
    '../_base_/datasets/shapes_semantic.py',
    '../_base_/default_runtime_seg.py',
]
norm_cfg = dict(type='BN', requires_grad=True)
crop_size = (256, 256)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(embed_dims=48, depths=(2, 2, 2, 2), drop_path_rate=0.1),
    decode_head=dict(in_channels=[48, 96, 192, 384], channels=64, num_classes=4,
                     norm_cfg=norm_cfg, pool_scales=(1, 2, 3)),
    auxiliary_head=dict(in_channels=192, channels=32, num_classes=4, norm_cfg=norm_cfg))

max_iters = 1000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-4, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=max_iters, by_epoch=False)
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=500, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
