# mmdet's own Swin-T RetinaNet with only the backbone's type swapped: mmdet's Swin keywords
# (qk_scale, patch_norm, convert_weights, ...) build mmvtx's Swin as mmdet's network (every
# SW-MSA block shifted), and its init_cfg (the authors' release) loads as it is.
_base_ = 'mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvtx'], allow_failed_imports=False)
model = dict(backbone=dict(type='mmvtx.SwinTransformer'))
