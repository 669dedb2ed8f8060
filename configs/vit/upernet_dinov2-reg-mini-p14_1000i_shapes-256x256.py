# UPerNet with a small DINOv2-with-registers ViT (patch 14, 128 wide, 6 layers, 4 registers,
# LayerScale) on the shapes label maps, from scratch on a CPU; its stride-14 map is resampled to
# the stride-16 grid. Differs from the plain ViT shapes config only in the backbone.
_base_ = './upernet_vit-mini-p16_1000i_shapes-256x256.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvtx.ViT',
        arch='dinov2-reg-b',
        embed_dims=128,
        num_layers=6,
        num_heads=4,
        img_size=252,
        feature_layers=(1, 2, 4, 5),
        drop_path_rate=0.1))
