from torch import nn


class Mlp(nn.Module):
    """The transformer feed-forward network: Linear -> activation -> Linear."""

    def __init__(self, dim: int, hidden_dim: int, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))
