"""Window geometry: how a token map is cut into ``M x M`` windows, with or without Swin's
cyclic shift, and the attention mask of shifted windows.

Swin (and ViTDet's window blocks) pad the ``H x W`` map bottom/right to multiples of ``M``,
Swin's SW-MSA rolls it by ``-M/2`` (the cyclic shift) and both partition it into windows;
afterwards the windows are merged, rolled back (the reverse shift) and cropped. Those three
steps are a permutation of the tokens plus some padding slots, so here they are one gather
(:func:`window_token_index`) and their inverse the inverse gather: no padded copy, no rolled
copy, no partitioned copy. :func:`tokens_to_windows` and :func:`windows_to_tokens` apply them
with gradients that are gathers too (every token sits in exactly one slot).

Tokens that the cyclic shift brought together from opposite borders of the map must not attend
to each other: :func:`shifted_window_mask` gives the additive ``nW x N x N`` mask of the Swin
paper (0 within one of the nine regions, -100 across). :class:`WindowGeometryCache` works all of
this out once per input size and hands it to every block of a stage.
"""
from functools import partial
from typing import Dict, Optional, Tuple

import torch

from .compat import custom_op, is_compiling
from .padding import padded
from .tracing import tracing

# Value the Swin authors (and mmdet, timm, transformers) put on attention logits between tokens
# that came from different regions of the cyclically shifted map.
SHIFT_MASK_VALUE = -100.0


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """``B x H x W x C`` (H, W multiples of M) -> ``B x nW x M*M x C`` windows, row-major."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, -1, window_size * window_size, C)


def shifted_region_map(H: int, W: int, window_size: int, shift_size: int) -> torch.Tensor:
    """Region label (0-8) of each token of the cyclically shifted ``H x W`` map, ``H x W``.

    After a cyclic shift by ``s`` the bottom and right strips of width ``s`` hold tokens that
    came from the opposite border; the slices ``[0, H-M), [H-M, H-s), [H-s, H)`` (and likewise
    for W) cut the map into nine regions whose tokens were neighbours before the shift."""
    labels = torch.zeros(H, W, dtype=torch.long)
    cuts = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    region = 0
    for h in cuts:
        for w in cuts:
            labels[h, w] = region
            region += 1
    return labels


def shifted_window_regions(H: int, W: int, window_size: int, shift_size: int) -> torch.Tensor:
    """:func:`shifted_region_map` partitioned into windows, ``nW x M*M``."""
    labels = shifted_region_map(H, W, window_size, shift_size)
    return window_partition(labels[None, :, :, None], window_size)[0, ..., 0]


def shifted_window_mask(H: int, W: int, window_size: int, shift_size: int) -> torch.Tensor:
    """Additive SW-MSA mask of a padded ``H x W`` map, ``nW x N x N``: 0 within a region, -100
    across regions."""
    regions = shifted_window_regions(H, W, window_size, shift_size)
    blocked = regions[:, :, None] != regions[:, None, :]
    return torch.zeros(blocked.shape).masked_fill_(blocked, SHIFT_MASK_VALUE)


def window_slot_coords(H: int, W: int, window_size: int, shift_size: int) -> torch.Tensor:
    """``nW x M*M x 2``: the (row, col) on the zero-padded ``Hp x Wp`` map of the token in each
    window slot, windows and their slots row-major as :func:`window_partition` of the padded
    map rolled by ``-shift_size``; a row ``>= H`` or column ``>= W`` is padding."""
    M = window_size
    Hp, Wp = padded(H, M), padded(W, M)
    rows = (torch.arange(Hp) + shift_size) % Hp  # roll by -s: row i of the result is row i+s
    cols = (torch.arange(Wp) + shift_size) % Wp
    grid = torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1)  # Hp x Wp x 2
    return window_partition(grid[None], M)[0]


def window_token_index(H: int, W: int, window_size: int, shift_size: int):
    """The pad -> cyclic shift -> window partition of an ``H x W`` token map as one gather.

    Returns ``(index, inverse, pad_slots)``: slot ``j`` of the windows (``nW * M*M`` slots,
    windows and their tokens row-major, as :func:`window_partition` of the zero-padded
    ``Hp x Wp`` map rolled by ``-shift``) holds token ``index[j]`` (``r * W + c``) unless ``j``
    is in ``pad_slots``; token ``t`` sits in slot ``inverse[t]``, which also undoes the
    partition, the shift (the reverse cyclic shift) and the padding in one gather."""
    coords = window_slot_coords(H, W, window_size, shift_size).reshape(-1, 2)
    rows, cols = coords[:, 0], coords[:, 1]
    slots = torch.where((rows >= H) | (cols >= W), -1, rows * W + cols)  # -1: padding
    # real slots first, then padded ones, each in slot order (a stable sort: shapes known from
    # H, W alone, so torch.compile traces it without data-dependent sizes)
    order = torch.argsort((slots < 0).to(torch.int8), stable=True)
    real, pad_slots = order[:H * W], order[H * W:]
    inverse = torch.empty(H * W, dtype=torch.long).index_copy_(0, slots[real], real)
    return slots.clamp(min=0), inverse, pad_slots


def _fill_pad_slots(out: torch.Tensor, pad: torch.Tensor, fill: Optional[torch.Tensor]):
    """``out`` (``B x P x D`` window slots) with its padded slots set to ``fill`` (a ``D``
    vector) or zeros. ``pad``: the padded slots' indices (eager mode: with none, a no-op), or
    while compiling/exporting a ``P`` bool mask of them (the geometry's custom op): a select
    over all slots, whose shapes do not depend on how many slots are padded (an index list of
    ``slots - H*W`` entries specialised a trace to maps with 0, 1 or more padded slots)."""
    if pad.dtype == torch.bool:
        if fill is None:
            return out.masked_fill(pad[:, None], 0)
        return torch.where(pad[:, None], fill.to(out.dtype), out)
    if pad.numel():
        if fill is None:
            out.index_fill_(1, pad, 0)
        else:
            B, K, D = out.shape[0], pad.numel(), out.shape[-1]
            out.index_copy_(1, pad, fill.to(out.dtype).expand(B, K, D))
    return out


def _pad_slot_sum(grad: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Sum over the batch and the padded slots of a ``B x P x D`` gradient (``pad``: indices
    or a bool mask, as :func:`_fill_pad_slots`)."""
    if pad.dtype == torch.bool:
        return torch.where(pad[:, None], grad, 0).sum((0, 1))
    return grad.index_select(1, pad).sum((0, 1))


class _TokensToWindows(torch.autograd.Function):
    """``B x L x D`` tokens -> ``B x P x D`` window slots (padded slots hold ``fill``); the
    backward is the inverse gather, not a scatter-add (every token sits in one slot)."""

    @staticmethod
    def forward(ctx, tokens, index, inverse, pad_slots, fill):
        ctx.save_for_backward(inverse, pad_slots)
        ctx.fill_dtype = None if fill is None else fill.dtype
        return _fill_pad_slots(tokens.index_select(1, index), pad_slots, fill)

    @staticmethod
    def backward(ctx, grad):
        inverse, pad_slots = ctx.saved_tensors
        grad_tokens = grad.index_select(1, inverse) if ctx.needs_input_grad[0] else None
        grad_fill = None
        if ctx.needs_input_grad[4]:
            grad_fill = _pad_slot_sum(grad, pad_slots).to(ctx.fill_dtype)
        return grad_tokens, None, None, None, grad_fill


class _WindowsToTokens(torch.autograd.Function):
    """``B x P x D`` window slots -> ``B x L x D`` tokens (padded slots dropped)."""

    @staticmethod
    def forward(ctx, windows, index, inverse, pad_slots):
        ctx.save_for_backward(index, pad_slots)
        return windows.index_select(1, inverse)

    @staticmethod
    def backward(ctx, grad):
        index, pad_slots = ctx.saved_tensors
        return _fill_pad_slots(grad.index_select(1, index), pad_slots, None), None, None, None


def tokens_to_windows(tokens: torch.Tensor, gather: tuple,
                      fill: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Tokens (``B x H*W x D``) into the slots of :func:`window_token_index` ``gather``; padded
    slots hold ``fill`` (a ``D`` vector) or zeros. Plain tensor ops where no gradient is needed
    (inference) and under ``torch.jit`` tracing (export, mmengine's FLOP counter)."""
    index, inverse, pad_slots = gather
    if torch.is_grad_enabled() and not tracing() and (tokens.requires_grad or (
            fill is not None and fill.requires_grad)):
        return _TokensToWindows.apply(tokens, index, inverse, pad_slots, fill)
    return _fill_pad_slots(tokens.index_select(1, index), pad_slots, fill)


def windows_to_tokens(windows: torch.Tensor, gather: tuple) -> torch.Tensor:
    """The inverse of :func:`tokens_to_windows` (``B x P x D`` -> ``B x H*W x D``)."""
    index, inverse, pad_slots = gather
    if torch.is_grad_enabled() and windows.requires_grad and not tracing():
        return _WindowsToTokens.apply(windows, index, inverse, pad_slots)
    return windows.index_select(1, inverse)


class WindowGeometry:
    """How a map of one size is tiled: window size ``M``, the shift of SW-MSA blocks, the
    SW-MSA mask (``nW x N x N`` or None) and the token gathers by shift (0 for W-MSA)."""

    def __init__(self, window_size: int, shift_size: int, mask: Optional[torch.Tensor],
                 gathers: Dict[int, tuple]):
        self.window_size = window_size
        self.shift_size = shift_size
        self.mask = mask
        self.gathers = gathers

    @property
    def tokens_per_window(self) -> int:
        return self.window_size ** 2


class WindowGeometryCache:
    """The :class:`WindowGeometry` of each input size, computed on first use and kept (up to
    ``max_sizes`` sizes; detection batches vary in size) so that all blocks of a stage and all
    steps at one size share it."""

    def __init__(self, max_sizes: int = 16):
        self.max_sizes = max_sizes
        self._cache: Dict[Tuple, WindowGeometry] = {}

    def clear(self):
        self._cache.clear()

    def get(self, H: int, W: int, window_size: int, shift_size: int, device: torch.device,
            with_shifted: bool = True, no_shift_within: int = 0) -> WindowGeometry:
        """Geometry of an ``H x W`` map; ``with_shifted=False`` leaves out the shifted gather and
        the mask (a stage of one block, or ViTDet's unshifted windows). ``no_shift_within``:
        a map with ``min(H, W) <= no_shift_within`` is not shifted (Swin's authors' rule with
        the window size; 0: every SW-MSA block shifts). In eager mode the shift is then 0;
        while compiling or exporting the rule is applied inside the custom ops (the shifted
        gather is the unshifted one and the mask all zeros), so that the trace has no branch
        on the map's size and one program serves maps on both sides of the rule."""
        if is_compiling():  # sizes may be symbolic: no cache, opaque ops
            # one all-padding window more where the window count is not known to be >= 2
            # (see the custom ops below)
            rule = dict(no_shift_within=no_shift_within,
                        extra_window=not _several_windows(H, W, window_size))
            return _build_geometry(H, W, window_size, shift_size, device, with_shifted,
                                   partial(_window_token_index_op, **rule),
                                   partial(_shifted_window_mask_op, **rule))
        if min(H, W) <= no_shift_within:
            shift_size = 0
        key = (H, W, window_size, shift_size, with_shifted, str(device))
        geo = self._cache.get(key)
        if geo is None:
            if len(self._cache) >= self.max_sizes:
                self._cache.clear()
            # built as normal tensors also under torch.inference_mode(): the cache outlives
            # the call, and inference tensors in it made every later training step at this
            # size fail ("Inference tensors cannot be saved for backward")
            with torch.inference_mode(False):
                geo = self._cache[key] = _build_geometry(H, W, window_size, shift_size, device,
                                                         with_shifted, _token_index_on, _mask_on)
        return geo


def _several_windows(H, W, window_size: int) -> bool:
    """Whether an ``H x W`` map is cut into at least 2 windows at every size the trace covers:
    True for a static (int) size of several windows; for symbolic sizes (``torch.compile``
    with dynamic sizes, ``torch.export``) only where the sizes' ranges prove it, without adding
    a guard."""
    windows = (padded(H, window_size) // window_size) * (padded(W, window_size) // window_size)
    try:
        from torch.fx.experimental.symbolic_shapes import statically_known_true
    except ImportError:  # an older torch: only a static count is known
        return isinstance(windows, int) and windows >= 2
    return statically_known_true(windows >= 2)


def _token_index_on(H, W, window_size, shift_size, device):
    return tuple(t.to(device) for t in window_token_index(H, W, window_size, shift_size))


def _mask_on(H, W, window_size, shift_size, device):
    return shifted_window_mask(H, W, window_size, shift_size).to(device)


def _build_geometry(H, W, M: int, shift_size: int, device, with_shifted: bool, token_index,
                    mask_of) -> WindowGeometry:
    """The geometry from ``token_index`` / ``mask_of`` (eager functions, or the custom ops
    below while compiling)."""
    shifts = {0, shift_size} if with_shifted else {0}
    mask = None
    if shift_size and with_shifted:
        mask = mask_of(padded(H, M), padded(W, M), M, shift_size, device)
    gathers = {s: token_index(H, W, M, s, device) for s in shifts}
    return WindowGeometry(M, shift_size, mask, gathers)


# --------------------------------------------------------------------------------------------
# Under torch.compile the geometry is built by two custom ops whose outputs' sizes are given in
# closed form (their fake implementations): traced through, the index arithmetic of
# window_token_index and shifted_window_regions on symbolic sizes makes sympy expressions that
# took minutes to simplify when a size first changed (automatic dynamic shapes). Their outputs'
# shapes depend on H, W and the window size alone, so that no guard on the map's size is added
# (torch.export with dynamic sizes: one program for every size):
# - the padded slots are a mask over all slots, not a list of ``slots - H*W`` indices (whose
#   length PyTorch specialises where it is 0 or 1);
# - the shift rule (``no_shift_within``) is applied inside: a map that is not shifted gets the
#   unshifted gather and an all-zero mask, not a Python branch on its size;
# - ``extra_window`` appends one window of padded slots (zero shift mask), which attends among
#   its padding and is dropped by the inverse gather: the window count is then at least 2,
#   where a count that may be 1 (a stage map within one window: stage 4 of Swin-T at 224 px
#   and below) is specialised by PyTorch to 1 or to more than 1 (every tensor with a window
#   axis adds the guard), whichever the traced size had. torch.export's program then served
#   one side only; torch.compile recompiled when a stage went from several windows to one or
#   back (a detection stream of varying sizes: a graph more, and minutes of compiling on CPU).
#   Added only where the count is not known to be >= 2 (a static size: never), so a compiled
#   graph computes at most one window per stage more than eager.
@custom_op('mmvtx::window_token_index', mutates_args=())
def _window_token_index_op(H: int, W: int, window_size: int, shift_size: int,
                           device: torch.device, no_shift_within: int = 0,
                           extra_window: bool = False
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if min(H, W) <= no_shift_within:
        shift_size = 0
    index, inverse, pad_slots = window_token_index(H, W, window_size, shift_size)
    slots = index.numel()
    pad = torch.zeros(slots, dtype=torch.bool).index_fill_(0, pad_slots, True)
    if extra_window:
        N = window_size * window_size
        index = torch.cat([index, index.new_zeros(N)])
        pad = torch.cat([pad, pad.new_ones(N)])
    # fresh tensors: inductor assumes a custom op's outputs are aligned (slices of one sort are not)
    return tuple(t.to(device).clone() for t in (index, inverse, pad))


@_window_token_index_op.register_fake
def _(H, W, window_size, shift_size, device, no_shift_within=0, extra_window=False):
    slots = (padded(H, window_size) // window_size * (padded(W, window_size) // window_size)
             + extra_window) * window_size * window_size
    return (torch.empty(slots, dtype=torch.long, device=device),
            torch.empty(H * W, dtype=torch.long, device=device),
            torch.empty(slots, dtype=torch.bool, device=device))


@custom_op('mmvtx::shifted_window_mask', mutates_args=())
def _shifted_window_mask_op(H: int, W: int, window_size: int, shift_size: int,
                            device: torch.device, no_shift_within: int = 0,
                            extra_window: bool = False) -> torch.Tensor:
    # H, W: the padded map's (a map fits in one window along a side exactly if its padded side
    # is one window)
    N = window_size * window_size
    if min(H, W) <= no_shift_within:
        mask = torch.zeros((H // window_size) * (W // window_size), N, N)
    else:
        mask = shifted_window_mask(H, W, window_size, shift_size)
    if extra_window:
        mask = torch.cat([mask, mask.new_zeros(1, N, N)])
    return mask.to(device)


@_shifted_window_mask_op.register_fake
def _(H, W, window_size, shift_size, device, no_shift_within=0, extra_window=False):
    N = window_size * window_size
    return torch.empty((H // window_size) * (W // window_size) + extra_window, N, N,
                       device=device)
