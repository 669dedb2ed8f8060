# Mask R-CNN CvT-21, COCO 1x. No published result exists.
_base_ = './mask-rcnn_cvt-13_fpn_1x_coco.py'
pretrained = 'CvT-21-224x224-IN-1k.pth'
model = dict(backbone=dict(arch='21', drop_path_rate=0.2, init_cfg=dict(checkpoint=pretrained)))
