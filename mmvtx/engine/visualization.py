"""``tools/test.py --show-dir DIR`` for segmentation as for detection: the drawn predictions
go to ``<work_dir>/<timestamp>/DIR``, one file per test image, also under
``tools/dist_test.sh``.

mmdet's ``DetVisualizationHook`` has ``test_out_dir`` (a folder under the run's log dir, one
file per image); mmseg's ``SegVisualizationHook`` has none and can only send its drawings to
the visualizer's backends (``save_dir``, relative to the current directory).
:class:`SegShowDirHook` is mmseg's hook with mmdet's ``test_out_dir``.

mmdet's and mmseg's visualizers draw in the main process only (``add_datasample`` is
``@master_only``), so with N processes ``--show-dir`` held only rank 0's images (the 1st,
(N+1)th, ... of the test set) and no word said of the others. :class:`DetShowDirHook` and
:class:`SegShowDirHook` draw each process's own images into the shared folder; the images
``DefaultSampler`` repeats to give every process as many (``round_up``) are not drawn again.
"""
import contextlib
import os.path as osp
from typing import Optional, Sequence

import mmcv
from mmdet.engine.hooks import DetVisualizationHook
from mmengine import fileio
from mmengine.dataset import DefaultSampler
from mmengine.utils import mkdir_or_exist
from mmseg.engine.hooks import SegVisualizationHook

from mmvtx.registry import HOOKS


@contextlib.contextmanager
def _every_rank(visualizer, runner):
    """The visualizer draws in this process even if it is not rank 0: mmengine's
    ``@master_only`` methods (``add_datasample``, ``set_image``, ``draw_bboxes``, ...,
    ``dataset_meta``, which the test loop could not set here) run while drawing into files."""
    import mmengine.dist.utils as dist_utils
    if dist_utils.is_main_process():
        yield
        return
    is_main = dist_utils.is_main_process  # what mmengine's master_only wrappers call
    dist_utils.is_main_process = lambda *args, **kwargs: True
    try:
        if visualizer.dataset_meta is None:
            visualizer.dataset_meta = runner.test_dataloader.dataset.metainfo
        yield
    finally:
        dist_utils.is_main_process = is_main


def _padding_mask(runner, batch_idx: int, n: int) -> list:
    """For the ``n`` outputs of test batch ``batch_idx``: whether each is one of the samples
    mmengine's ``DefaultSampler`` adds so that every process gets as many (repeats of the first
    images, drawn by the process they belong to). All False for other samplers."""
    loader = runner.test_dataloader
    sampler = getattr(loader, 'sampler', None)
    batch_size = getattr(loader, 'batch_size', None)
    if type(sampler) is not DefaultSampler or not batch_size:
        return [False] * n
    size = len(sampler.dataset)
    # DefaultSampler gives rank r the positions r, r + W, r + 2W, ... of the padded list
    return [sampler.rank + (batch_idx * batch_size + i) * sampler.world_size >= size
            for i in range(n)]


@HOOKS.register_module()
class DetShowDirHook(DetVisualizationHook):
    """mmdet's ``DetVisualizationHook``; with ``test_out_dir``, every process draws its own
    test images (mmdet's drew rank 0's only under ``tools/dist_test.sh``)."""

    def after_test_iter(self, runner, batch_idx: int, data_batch: dict,
                        outputs: Sequence) -> None:
        if self.draw is False or self.test_out_dir is None or self.show:
            return super().after_test_iter(runner, batch_idx, data_batch, outputs)
        padding = _padding_mask(runner, batch_idx, len(outputs))
        outputs = [o for o, pad in zip(outputs, padding) if not pad]
        with _every_rank(self._visualizer, runner):
            super().after_test_iter(runner, batch_idx, data_batch, outputs)


@HOOKS.register_module()
class SegShowDirHook(SegVisualizationHook):
    """mmseg's ``SegVisualizationHook``; with ``test_out_dir``, every ``interval``-th test
    batch's predictions are drawn into ``<work_dir>/<timestamp>/<test_out_dir>/<image file
    name>``, as mmdet's ``DetVisualizationHook`` does (an absolute ``test_out_dir`` is used as
    it is), by every process for its own images."""

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
        padding = _padding_mask(runner, batch_idx, len(outputs))
        # each process draws its own images (mmseg's visualizer draws in rank 0 only); a window
        # (show=True) stays rank 0's
        with contextlib.nullcontext() if self.show else _every_rank(self._visualizer, runner):
            for output, pad in zip(outputs, padding):
                if pad:
                    continue
                name = osp.basename(output.img_path)
                img = mmcv.imfrombytes(fileio.get(output.img_path,
                                                  backend_args=self.backend_args),
                                       channel_order='rgb')
                self._visualizer.add_datasample(f'test_{name}', img, data_sample=output,
                                                show=self.show, wait_time=self.wait_time,
                                                out_file=osp.join(out_dir, name),
                                                step=runner.iter)
