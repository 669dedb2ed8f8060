# UPerNet with ViT-B/16 (DeiT-B ImageNet-1k weights), levels from layers 3/6/9/12 with the final
# LayerNorm, as mmseg's "DeiT-B + LN + MLN" recipe: 45.37 mIoU (47.23 ms+flip), single scale.
# Twin: mmseg::vit/vit_deit-b16-ln_mln_upernet_8xb2-160k_ade20k-512x512.py; mmseg resizes the four
# levels with a separate MultiLevelNeck (768 channels each), mmvtx's ViT with its own pyramid
# (deconvolutions, 192/384/768/768 channels). Other differences: README.md.
_base_ = [
    '../_base_/models/upernet_swin-t-p4-w7.py',
    '../_base_/datasets/ade20k_512x512.py',
    '../_base_/default_runtime_seg.py',
    '../_base_/schedules/schedule_160k.py',
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
pretrained = 'https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='mmvtx.ViT',
        arch='base',
        img_size=224,
        feature_layers=(2, 5, 8, 11),
        drop_path_rate=0.1,
        final_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[192, 384, 768, 768], num_classes=150),
    # mmseg's ViT recipes put the auxiliary FCN head on the last level (layer 12), not level 2
    auxiliary_head=dict(in_channels=768, in_index=3, num_classes=150))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'pos_embed': dict(decay_mult=0.),
        'cls_token': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]
train_dataloader = dict(batch_size=4)  # 4 GPUs x 4 = mmseg's 8 x 2
