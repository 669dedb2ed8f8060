# UPerNet Swin-T ADE20K 512x512 160k: mmseg 44.41 mIoU (paper 44.51), single scale.
# Twin: mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py, equal
# outside the backbone but for the differences README.md lists: 4 GPUs x 4 images where mmseg
# runs 8 x 2 (16 a step in both; tests/configs/test_recipe_fidelity.py checks it).
_base_ = [
    '../_base_/models/upernet_swin-t-p4-w7.py',
    '../_base_/datasets/ade20k_512x512.py',
    '../_base_/default_runtime_seg.py',
    '../_base_/schedules/schedule_160k.py',
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
pretrained = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth'  # noqa: E501
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.3,
        always_shift=True,  # mmseg's Swin shifts every SW-MSA block (the authors' weights load)
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
# AdamW lr 6e-5, wd 0.01, none on position embeddings, relative position tables and norms
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]
train_dataloader = dict(batch_size=4)  # 4 GPUs x 4 = mmseg's 8 x 2
