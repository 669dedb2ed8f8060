# mmseg's own Swin-T Mask2Former with only the backbone's type swapped (see the RetinaNet file).
_base_ = 'mmseg::mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmvtx'], allow_failed_imports=False)
model = dict(backbone=dict(type='mmvtx.SwinTransformer'))
