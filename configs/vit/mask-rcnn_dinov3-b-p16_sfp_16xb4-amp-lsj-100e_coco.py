# Mask R-CNN with DINOv3 ViT-B/16: the DINOv2 recipe of this folder with the DINOv3 backbone
# (rotary positions, 4 storage tokens, global attention in every block). Published anchors: none
# (DINOv3's paper reports ViT-7B with Plain-DETR, 66.1 box AP). Not reproduced.
# The weights are sent per user after Meta's request form (no public URL): put the file into
# torch's hub cache ($TORCH_HOME/hub/checkpoints) or the directory you train from, under
# this name (a bare file name is looked up in those two places only).
_base_ = ['./mask-rcnn_dinov2-reg-b-p14_sfp_16xb4-amp-lsj-100e_coco.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.ViT',
        arch='dinov3-b',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained',
                      checkpoint='dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth')))
