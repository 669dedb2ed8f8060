# Mask R-CNN with a small ViTDet (patch 16, 128 wide, 6 layers, window 4 with global blocks 2
# and 5, decomposed relative positions, no [CLS], no final norm), from scratch on the embedded
# shapes scenes on a CPU. Differs from the plain ViT shapes config only in the backbone.
_base_ = './mask-rcnn_vit-mini-p16_sfp_700i_shapes.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.ViT',
        arch='vitdet-b',
        embed_dims=128,
        num_layers=6,
        num_heads=4,
        img_size=256,
        rel_pos_img_size=256,
        window_size=4,
        global_attn_indexes=(2, 5),
        drop_path_rate=0.1))
