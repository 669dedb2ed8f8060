# UPerNet with DINOv2 ViT-B/14 with registers (Darcet et al. 2024; the authors' LVD-142M weights),
# levels from layers 3/6/9/12, each with DINOv2's final LayerNorm, on ADE20K 512x512 crops.
# Published anchors: none for UPerNet (DINOv2's paper reports linear probes on frozen features,
# ViT-B/14 47.3 mIoU linear, 51.3 +ms); this recipe is the DeiT-B UPerNet one of this folder with
# the DINOv2 backbone and BEiT-style layer decay 0.65. Not reproduced (no GPU run yet).
# Patch 14: the 37x37 token grid of a 512-px crop (padded to 518) is resampled, pixel-aligned,
# to the 32x32 stride-16 grid the pyramid starts from (mmvtx.ViT's docstring).
_base_ = ['./upernet_vit-b-p16_4xb4-160k_ade20k-512x512.py']
pretrained = ('https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/'
              'dinov2_vitb14_reg4_pretrain.pth')
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.ViT',
        arch='dinov2-reg-b',  # patch 14, 518-px position table, 4 registers, LayerScale
        feature_layers=(2, 5, 8, 11),
        feature_norm=True,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='mmvtx.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.65),
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.05))
