# mmseg's own DPT (ViT-B/16) with only the backbone's type swapped: mmseg's out_indices count
# encoder layers (2, 5, 8, 11), so mmvtx's ViT returns those layers' stride-16 maps with their
# [CLS] tokens (output_cls_token: DPT's readout) as mmseg's VisionTransformer does, for DPT's
# head, and its pretrained file (mmseg's converted timm ViT) loads as it is.
_base_ = 'mmseg::dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmvtx'], allow_failed_imports=False)
model = dict(backbone=dict(type='mmvtx.ViT'))
