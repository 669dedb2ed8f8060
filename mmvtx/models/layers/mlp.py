import torch
from torch import nn

from .linear import Linear
from .recompute import gelu_linear


class Mlp(nn.Module):
    """The transformer feed-forward network: Linear -> activation -> Linear.

    With (exact) GELU, training keeps only the first Linear's output for backward
    (:func:`gelu_linear`), not the activation's output as well; without grad (inference) the
    GELU runs in place on the first Linear's output."""

    def __init__(self, dim: int, hidden_dim: int, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = Linear(hidden_dim, dim)

    def forward(self, x):
        h = self.fc1(x)
        if type(self.act) is nn.GELU and self.act.approximate == 'none':
            if not torch.is_grad_enabled():  # h is this call's own: GELU in place
                return self.fc2(torch.ops.aten.gelu_(h))
            return gelu_linear(h, self.fc2.weight, self.fc2.bias)
        return self.fc2(self.act(h))
