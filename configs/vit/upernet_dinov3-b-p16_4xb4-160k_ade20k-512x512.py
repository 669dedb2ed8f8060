# UPerNet with DINOv3 ViT-B/16 (Simeoni et al. 2025; distilled, LVD-1689M weights), levels from
# layers 3/6/9/12 with the final LayerNorm, on ADE20K 512x512 crops. Published anchors: none for
# UPerNet with ViT-B (DINOv3's paper reports ViT-7B with Mask2Former, 63.0 mIoU, and linear
# probes). This recipe is the DINOv2 one of this folder with the DINOv3 backbone. Not reproduced.
# The weights are sent per user after Meta's request form (no public URL): put the file into
# torch's hub cache ($TORCH_HOME/hub/checkpoints) or the directory you train from, under
# this name (a bare file name is looked up in those two places only).
_base_ = ['./upernet_dinov2-reg-b-p14_4xb4-160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.ViT',
        arch='dinov3-b',  # rotary positions, 4 storage tokens, LayerScale, q/v biases
        feature_layers=(2, 5, 8, 11),
        feature_norm=True,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained',
                      checkpoint='dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth')))
