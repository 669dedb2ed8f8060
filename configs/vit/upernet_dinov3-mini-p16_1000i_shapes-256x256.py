# UPerNet with a small DINOv3 ViT (patch 16, 128 wide, 6 layers, rotary positions, 4 storage
# tokens, LayerScale) on the shapes label maps, from scratch on a CPU. Differs from the plain ViT
# shapes config only in the backbone.
_base_ = './upernet_vit-mini-p16_1000i_shapes-256x256.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.ViT',
        arch='dinov3-b',
        embed_dims=128,
        num_layers=6,
        num_heads=4,
        feature_layers=(1, 2, 4, 5),
        drop_path_rate=0.1))
