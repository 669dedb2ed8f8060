"""``tools/test.py --show-dir DIR`` for segmentation as for detection: the drawn predictions
go to ``<work_dir>/<timestamp>/DIR``.

mmdet's ``DetVisualizationHook`` has ``test_out_dir`` (a folder under the run's log dir, one
file per image); mmseg's ``SegVisualizationHook`` has none and can only send its drawings to
the visualizer's backends (``save_dir``, relative to the current directory).
:class:`SegShowDirHook` is mmseg's hook with mmdet's ``test_out_dir``.
"""
import os.path as osp
from typing import Optional, Sequence

import mmcv
from mmengine import fileio
from mmengine.utils import mkdir_or_exist
from mmseg.engine.hooks import SegVisualizationHook

from mmvtx.registry import HOOKS


@HOOKS.register_module()
class SegShowDirHook(SegVisualizationHook):
    """mmseg's ``SegVisualizationHook``; with ``test_out_dir``, every ``interval``-th test
    batch's predictions are drawn into ``<work_dir>/<timestamp>/<test_out_dir>/<image file
    name>``, as mmdet's ``DetVisualizationHook`` does (an absolute ``test_out_dir`` is used as
    it is)."""

    def __init__(self, test_out_dir: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.test_out_dir = test_out_dir

    def after_test_iter(self, runner, batch_idx: int, data_batch: dict,
                        outputs: Sequence) -> None:
        if self.test_out_dir is None:
            return super().after_test_iter(runner, batch_idx, data_batch, outputs)
        if self.draw is False or not self.every_n_inner_iters(batch_idx, self.interval):
            return
        out_dir = osp.join(runner.work_dir, runner.timestamp, self.test_out_dir)
        mkdir_or_exist(out_dir)
        for output in outputs:
            name = osp.basename(output.img_path)
            img = mmcv.imfrombytes(fileio.get(output.img_path, backend_args=self.backend_args),
                                   channel_order='rgb')
            self._visualizer.add_datasample(f'test_{name}', img, data_sample=output,
                                            show=self.show, wait_time=self.wait_time,
                                            out_file=osp.join(out_dir, name), step=runner.iter)
