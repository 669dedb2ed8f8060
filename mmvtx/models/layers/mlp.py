import torch
from torch import nn

from .linear import Linear, scaled_weight
from .recompute import gelu_linear
from .tracing import tracing


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(1.702 x)``, the GELU approximation of the CvT authors' released models."""
    return x * torch.sigmoid(1.702 * x)


class Activation(nn.Module):
    """The MLP's activation by name: ``gelu`` (exact), ``quick_gelu`` or ``gelu_tanh`` (GELU's
    tanh approximation: SigLIP, as big_vision and transformers compute it).

    The name is an attribute, not a choice of module class, so a backbone can follow the
    checkpoint it loads (CvT: the authors' release computes QuickGELU) by setting
    ``act.name`` without replacing modules."""
    NAMES = ('gelu', 'quick_gelu', 'gelu_tanh')

    def __init__(self, name: str = 'gelu'):
        super().__init__()
        if name not in self.NAMES:
            raise ValueError(f'activation must be one of {self.NAMES}, not {name!r}')
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == 'quick_gelu':
            return quick_gelu(x)
        return torch.nn.functional.gelu(x, approximate='tanh' if self.name == 'gelu_tanh'
                                        else 'none')

    def extra_repr(self) -> str:
        return self.name


class Mlp(nn.Module):
    """The transformer feed-forward network: Linear -> activation -> Linear.

    With (exact) GELU, training keeps only the first Linear's output for backward
    (:func:`gelu_linear`), not the activation's output as well; without grad (inference) the
    GELU runs in place on the first Linear's output; under ``torch.jit`` tracing it is plain
    GELU + Linear (:mod:`.tracing`)."""

    def __init__(self, dim: int, hidden_dim: int, act: str = 'gelu'):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = Activation(act)
        self.fc2 = Linear(hidden_dim, dim)

    def forward(self, x, out_scale=None):
        """``out_scale``: LayerScale of the branch, folded into ``fc2``."""
        h = self.fc1(x)
        if self.act.name == 'gelu':
            if tracing():  # plain operators for the tracer (mmengine's FLOP counter, export)
                return self.fc2(torch.nn.functional.gelu(h), out_scale)
            if not torch.is_grad_enabled():  # h is this call's own: GELU in place
                return self.fc2(torch.ops.aten.gelu_(h), out_scale)
            return gelu_linear(h, *scaled_weight(self.fc2.weight, self.fc2.bias, out_scale),
                               self.fc2.onednn)
        return self.fc2(self.act(h), out_scale)


class SwiGLU(nn.Module):
    """Gated feed-forward network (DINOv2's ViT-g, DINOv3's larger models):
    ``w3(silu(x W1) * x W2)``, ``w12`` holding ``W1`` and ``W2`` stacked (the DINOv2 authors'
    fused layout)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w12 = Linear(dim, 2 * hidden_dim)
        self.w3 = Linear(hidden_dim, dim)

    def forward(self, x, out_scale=None):
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(torch.nn.functional.silu(x1) * x2, out_scale)


class LayerScale(nn.Module):
    """Per-channel scaling of a residual branch (Touvron et al. 2021, CaiT; DeiT-III, DINOv2,
    DINOv3), initialised to ``init_value``. The ViT folds ``gamma`` into the branch's last
    linear map (``out_scale``) rather than calling this module, so that training does not keep
    the branch output for ``gamma``'s gradient."""

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x):
        return x * self.gamma
