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


def resize_pos_embed(pos_embed: torch.Tensor, src_grid, dst_grid, num_extra_tokens: int = 1,
                     antialias: bool = False, offset: float = 0.0) -> torch.Tensor:
    """``1 x (extra + h*w) x C`` position embedding from an ``h x w`` patch grid to another
    (bicubic, in float32, as mmseg/timm/transformers); the extra ([CLS]) positions are kept.

    ``antialias`` and ``offset`` follow DINOv2's ``interpolate_antialias`` /
    ``interpolate_offset``: with an offset the resampling scale is ``(dst + offset) / src`` (the
    DINO "historical kludge", 0.1 in DINOv2's release) instead of ``dst / src``."""
    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    if src_grid == dst_grid:
        return pos_embed
    extra, grid = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    C = pos_embed.shape[-1]
    grid = grid.reshape(1, src_grid[0], src_grid[1], C).permute(0, 3, 1, 2).float()
    if offset:
        scales = [(d + offset) / s for d, s in zip(dst_grid, src_grid)]
        grid = F.interpolate(grid, scale_factor=scales, mode='bicubic', align_corners=False,
                             antialias=antialias)
        if tuple(grid.shape[-2:]) != dst_grid:
            raise ValueError(f'position embedding offset {offset} resized {src_grid} to '
                             f'{tuple(grid.shape[-2:])}, not {dst_grid}')
    else:
        grid = F.interpolate(grid, size=dst_grid, mode='bicubic', align_corners=False,
                             antialias=antialias)
    grid = grid.to(pos_embed.dtype).flatten(2).transpose(1, 2)
    return torch.cat([extra, grid], dim=1)
