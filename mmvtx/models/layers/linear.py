"""Per-token linear maps through oneDNN on CPU.

A linear map applied to every token *is* a 1x1 convolution of the ``M x K`` token matrix read
as channels-last ``K x M/n x 1`` images, without a copy either way, so :func:`linear` can call
``F.conv2d`` on that view: PyTorch then runs oneDNN (its convolution backend, AVX-512) instead
of the BLAS its x86 wheels call for ``F.linear`` (MKL, which runs generic x86 code on AMD
CPUs). Values equal ``F.linear`` up to float32 rounding (summation order); gradients come from
oneDNN's convolution backward. The README gives the GEMM rates measured on each machine.

Used for float32 CPU tensors outside autocast and torch.compile; everything else (CUDA,
bf16/fp16, autocast, float64, compiled graphs) calls ``F.linear``. Whether a module uses it is
decided when the module is built: the ``onednn`` argument of :class:`Linear`, else
``MMVTX_ONEDNN_LINEAR`` (``1`` on, ``0`` off), else on for AMD CPUs only (on Intel CPUs MKL runs
its AVX-512 kernels and was the faster of the two; the README has both machines' figures).
Nothing changes behind a built model's back.
"""
import functools
import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .compat import is_compiling


@functools.lru_cache(maxsize=None)
def cpu_vendor() -> str:
    """The CPU's vendor id (``AuthenticAMD``, ``GenuineIntel``, ...; ``''`` if unknown)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('vendor_id'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return ''


def onednn_linear_default() -> bool:
    """Whether a :class:`Linear` built now takes the oneDNN path: ``MMVTX_ONEDNN_LINEAR`` if set
    (``0``/``false``/empty: off), else on for AMD CPUs only."""
    env = os.environ.get('MMVTX_ONEDNN_LINEAR')
    if env is not None:
        return env not in ('0', 'false', 'False', '')
    return cpu_vendor() == 'AuthenticAMD'


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled('cpu')
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


# whether this torch has oneDNN, asked once at import: torch.compile's dynamo refuses to trace
# ``torch.backends.mkldnn.is_available`` (it broke the graph at every linear map on AMD CPUs)
MKLDNN_BUILT = torch.backends.mkldnn.is_available()


def _compiling() -> bool:
    """Inside torch.compile's tracing: the compiler picks the matrix kernels itself, and the
    view's batch split (a divisor of the token count) would guard each graph on the token
    count, compiling anew for most input sizes."""
    return is_compiling()


def uses_onednn(x: torch.Tensor, weight: torch.Tensor, onednn: bool = True) -> bool:
    """Whether :func:`linear` takes the oneDNN (1x1 convolution) path for these tensors."""
    return (onednn and x.device.type == 'cpu' and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.numel() > 0
            and MKLDNN_BUILT and torch.backends.mkldnn.enabled
            and not _cpu_autocast() and not _compiling())


def _batch_split(m: int) -> int:
    """A divisor of ``m`` in [16, 64), else 1. PyTorch sends a 1x1 convolution to oneDNN only
    when the batch is >= 16 or more than one thread runs (its ``use_mkldnn`` rule), so the token
    rows are read as a batch of images of ``m / n`` tokens each."""
    return next((n for n in range(16, 64) if m % n == 0), 1)


def _as_image(x: torch.Tensor) -> torch.Tensor:
    """``... x K`` -> its ``M x K`` token matrix as a channels-last ``n x K x M/n x 1`` view."""
    K = x.shape[-1]
    x = x.reshape(-1, K)
    if not x.is_contiguous():
        x = x.contiguous()
    M = x.shape[0]
    n = _batch_split(M)
    return x.view(n, M // n, 1, K).permute(0, 3, 1, 2)


def _from_image(y: torch.Tensor, lead: Tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`_as_image` (a view when ``y`` is channels-last, as oneDNN returns)."""
    return y.permute(0, 2, 3, 1).reshape(*lead, y.shape[1])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           onednn: bool = True) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN for float32 CPU tensors (unless
    ``onednn=False``)."""
    if not uses_onednn(x, weight, onednn):
        return F.linear(x, weight, bias)
    y = F.conv2d(_as_image(x), weight.reshape(*weight.shape, 1, 1), bias)
    return _from_image(y, x.shape[:-1])


def linear_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                    output_mask: Tuple[bool, bool, bool], onednn: bool = True):
    """Gradients of ``linear(x, weight, bias)`` w.r.t. (x, weight, bias), each only where
    ``output_mask`` asks (else None); for hand-written autograd Functions."""
    need_x, need_w, need_b = output_mask
    if uses_onednn(x, weight, onednn) and grad_out.dtype == torch.float32:
        gx, gw, gb = torch.ops.aten.convolution_backward(
            _as_image(grad_out), _as_image(x), weight.reshape(*weight.shape, 1, 1),
            [weight.shape[0]] if need_b else None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
            [need_x, need_w, need_b])
        return (_from_image(gx, x.shape[:-1]) if need_x else None,
                gw.reshape(weight.shape) if need_w else None, gb if need_b else None)
    g2 = grad_out.reshape(-1, grad_out.shape[-1])
    gx = grad_out.matmul(weight) if need_x else None
    gw = g2.t().mm(x.reshape(-1, x.shape[-1])) if need_w else None
    gb = g2.sum(0) if need_b else None
    return gx, gw, gb


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state-dict keys) whose forward is :func:`linear`;
    ``onednn=None`` takes ``MMVTX_ONEDNN_LINEAR`` at construction."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 onednn: Optional[bool] = None, **kwargs):
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self.onednn = onednn_linear_default() if onednn is None else bool(onednn)

    def forward(self, x: torch.Tensor, out_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``out_scale``: per-output-channel factors (LayerScale) folded into the weight and
        bias, so that autograd keeps the (small) scaled weight, not the scaled output."""
        return linear(x, *scaled_weight(self.weight, self.bias, out_scale), self.onednn)


def scaled_weight(weight: torch.Tensor, bias: Optional[torch.Tensor],
                  out_scale: Optional[torch.Tensor]):
    """``(weight, bias)`` with each output channel multiplied by ``out_scale`` (if given)."""
    if out_scale is None:
        return weight, bias
    return weight * out_scale[:, None], (bias * out_scale if bias is not None else None)
