"""FLOPs counted from the operators a model actually runs (``torch.utils.flop_counter``), not
from hand formulas.

PyTorch's counter knows the CUDA attention kernels but not the CPU one
(``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward): on a CPU every fused
attention call would count 0. :data:`CPU_ATTENTION` adds them with PyTorch's own attention
formulas: forward ``q k^T`` and ``p v``, ``2 x 2 B h N L d``; backward 2.5 times that, five
products of ``2 B h N L d`` (``q k^T`` recomputed, then the ones giving the gradients of
``p``, ``v``, ``q`` and ``k``). As in PyTorch's counter and in the papers' tables, a
multiply-add counts 2 FLOPs and only matrix products and convolutions count; the papers'
"FLOPs" (Swin-T 4.5 G, ViT-B/16 17.6 G) count a multiply-add once, so they compare with
:attr:`FlopCount.gmacs`.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict

import torch
from torch.utils import flop_counter

aten = torch.ops.aten


def _cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward(grad_out_shape, query_shape, key_shape, value_shape, *args,
                            out_shape=None, **kwargs):
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape,
                                                 value_shape)


CPU_ATTENTION = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}
ATTENTION_OPS = frozenset({
    aten._scaled_dot_product_flash_attention_for_cpu,
    aten._scaled_dot_product_flash_attention_for_cpu_backward,
    aten._scaled_dot_product_efficient_attention, aten._scaled_dot_product_efficient_attention_backward,
    aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_flash_attention_backward,
    aten._scaled_dot_product_cudnn_attention, aten._scaled_dot_product_cudnn_attention_backward,
})


@dataclass
class FlopCount:
    """FLOPs of one call, in total, per operator (``{'aten.mm': n, ...}``) and per module
    (``{'ViT.pyramid': n, ...}``, names as PyTorch's counter gives them)."""
    total: int
    by_op: Dict[str, int] = field(default_factory=dict)
    attention: int = 0  # the part in fused attention kernels
    by_module: Dict[str, int] = field(default_factory=dict)

    @property
    def gmacs(self) -> float:
        """Multiply-adds in billions: what the papers call GFLOPs."""
        return self.total / 2e9


def count_flops(fn: Callable[[], object]) -> FlopCount:
    """FLOPs of the operators ``fn()`` runs (forward, or forward and backward if ``fn`` calls
    ``backward``), fused CPU attention included."""
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)
    with counter:
        fn()
    per_module = counter.get_flop_counts()
    counts = per_module.get('Global', {})
    by_op = {str(op): int(n) for op, n in counts.items()}
    attention = sum(int(n) for op, n in counts.items()
                    if getattr(op, 'overloadpacket', op) in ATTENTION_OPS or op in ATTENTION_OPS)
    by_module = {name: int(sum(ops.values())) for name, ops in per_module.items()}
    return FlopCount(int(counter.get_total_flops()), by_op, attention, by_module)
