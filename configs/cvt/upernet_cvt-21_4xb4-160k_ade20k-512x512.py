# UPerNet CvT-21, ADE20K 512x512 160k. No published result exists.
_base_ = './upernet_cvt-13_4xb4-160k_ade20k-512x512.py'
pretrained = 'CvT-21-224x224-IN-1k.pth'
model = dict(backbone=dict(arch='21', drop_path_rate=0.2, init_cfg=dict(checkpoint=pretrained)))
