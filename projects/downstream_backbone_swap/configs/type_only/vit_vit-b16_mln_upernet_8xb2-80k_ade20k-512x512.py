# mmseg's own UPerNet-ViT (ViT-B/16, MultiLevelNeck) with only the backbone's type swapped:
# mmseg's keywords (norm_cfg, act_cfg, interpolate_mode, out_indices counting layers) make
# mmvtx's ViT return the stride-16 maps of layers 2, 5, 8, 11 for the MultiLevelNeck, as
# mmseg's VisionTransformer does (no built-in pyramid: the neck rescales them).
_base_ = 'mmseg::vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py'
custom_imports = dict(imports=['mmvtx'], allow_failed_imports=False)
model = dict(backbone=dict(type='mmvtx.ViT'))
