"""What the three backbones share: presets, ``out_indices`` checks, ``frozen_stages`` and
``norm_eval`` in ``train()``, and weight initialisation / pretrained loading."""
from typing import Sequence, Tuple

from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm


class VisionBackbone(BaseModule):
    """Base of :class:`SwinTransformer`, :class:`ViT` and :class:`CvT`.

    Subclasses define ``arch_zoo`` (preset name -> settings), ``num_features`` (channels per
    level; or override ``out_channels``), ``_frozen_modules()``,
    ``_default_init()`` and ``convert_state_dict()`` (any public checkpoint layout -> ours)."""
    arch_zoo: dict = {}
    arch_aliases: dict = {}
    frozen_stages: int = -1
    norm_eval: bool = False

    @classmethod
    def resolve_arch(cls, arch) -> dict:
        """A copy of a preset's settings by (case-insensitive) name, or of the user's dict."""
        if isinstance(arch, dict):
            return dict(arch)
        key = str(arch).lower()
        key = cls.arch_aliases.get(key, key)
        if key not in cls.arch_zoo:
            raise ValueError(f'{cls.__name__}: unknown arch {arch!r}; presets are '
                             f'{sorted(cls.arch_zoo)} or a dict')
        return dict(cls.arch_zoo[key])

    @classmethod
    def check_out_indices(cls, out_indices, num_levels: int) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        out = tuple(sorted(i % num_levels if i < 0 else i for i in out_indices))
        if not out or any(i >= num_levels for i in out) or len(set(out)) != len(out):
            raise ValueError(f'{cls.__name__}: out_indices {tuple(out_indices)} must be distinct '
                             f'indices in [0, {num_levels})')
        return out

    @property
    def out_channels(self) -> Tuple[int, ...]:
        """Channels of the returned maps (``num_features`` of the ``out_indices`` levels)."""
        return tuple(self.num_features[i] for i in self.out_indices)

    def check_input(self, x) -> None:
        if x.dim() != 4:
            raise ValueError(f'{type(self).__name__} expects B x C x H x W, '
                             f'got {tuple(x.shape)}')

    def _frozen_modules(self) -> Sequence:
        raise NotImplementedError

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def _default_init(self):
        raise NotImplementedError

    def convert_state_dict(self, state_dict: dict) -> dict:
        raise NotImplementedError

    def init_weights(self):
        """Default (truncated-normal) init, or the checkpoint of ``init_cfg=dict(type=
        'Pretrained', checkpoint=...)`` converted from whichever public format it is in."""
        from mmvtx.utils.checkpoint import init_backbone_weights
        init_backbone_weights(self)
