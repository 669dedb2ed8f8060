# 160k iterations (mmseg's schedule_160k.py); the Swin recipes replace the optimizer with AdamW.
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=160000, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# the total batch the recipes' lr is set for (4 GPUs x 4 images, as mmseg's 8 x 2): what
# `tools/train.py --auto-scale-lr` scales the lr from when fewer GPUs train (mmseg's configs have
# none, as mmseg's tools/train.py has no --auto-scale-lr; mmdet's recipes have base_batch_size=16)
auto_scale_lr = dict(enable=False, base_batch_size=16)
