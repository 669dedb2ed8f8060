# Mask R-CNN with DINOv2 ViT-B/14 with registers, the ViTDet recipe of this folder (LSJ 1024,
# simple feature pyramid, layer decay 0.7, 100 epochs) with the DINOv2 backbone in place of
# ViTDet's: global attention in every block (register tokens need it), no relative positions,
# DINOv2's final LayerNorm on the last layer (5476 tokens a 1024-px image; set with_cp=True if
# 4 images a GPU do not fit). Published anchors: none (neither DINOv2 paper trains a detector).
# Not reproduced (no GPU run yet).
_base_ = ['./mask-rcnn_vit-b-p16_sfp_16xb4-amp-lsj-100e_coco.py']
pretrained = ('https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/'
              'dinov2_vitb14_reg4_pretrain.pth')
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.ViT',
        arch='dinov2-reg-b',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
