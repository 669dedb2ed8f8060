"""Whether the backbone runs under ``torch.jit``'s tracer.

mmengine's FLOP counter (``mmengine.analysis.get_model_complexity_info``, which mmdet's and
mmseg's ``tools/analysis_tools/get_flops.py`` call with autograd on), ``torch.jit.trace`` and
the tracing ONNX exporter record the model's ATen operators. What PyTorch does not trace
into -- a custom ``torch.autograd.Function`` (recorded as one opaque ``prim::PythonOp``), and
for mmengine's counter also ``aten::scaled_dot_product_attention``, which it does not count --
hid most of the backbones' FLOPs from it: the second Linear of every MLP
(:func:`.recompute.gelu_linear`) and every attention product (a third of Swin-T's and
CvT-13's FLOPs at 224). While tracing, the layers compute the same values with plain operators
(``F.gelu`` + Linear, ``softmax(q k^T) v`` as two matmuls, as mmdet's and mmseg's own
backbones write it).
"""
import torch


def tracing() -> bool:
    """True inside ``torch.jit`` tracing (never while ``torch.compile`` traces)."""
    return torch.jit.is_tracing()
