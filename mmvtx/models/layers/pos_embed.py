"""Resolution is a first-class operation: resizing learned position tables between sizes."""
import torch
import torch.nn.functional as F


def resize_rel_pos_bias_table(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """``(2m-1)^2 x heads`` relative position bias table -> ``(2M-1)^2 x heads`` by bicubic
    interpolation of the ``(2m-1) x (2m-1)`` grid of offsets (as the Swin authors do when
    fine-tuning at another window size)."""
    src = round(table.shape[0] ** 0.5)
    dst = 2 * window_size - 1
    if src == dst:
        return table
    heads = table.shape[1]
    grid = table.float().T.reshape(1, heads, src, src)
    grid = F.interpolate(grid, size=(dst, dst), mode='bicubic', align_corners=False)
    return grid.reshape(heads, dst * dst).T.to(table.dtype)
