"""Time a training step (forward + backward) and measure the peak memory of an mmvtx backbone
against its reference implementation, same weights and input, in one run.

    python tools/analysis_tools/benchmark_backbone.py --model swin              # vs mmdet's Swin-T
    python tools/analysis_tools/benchmark_backbone.py --model swin --device cuda --amp
    python tools/analysis_tools/benchmark_backbone.py --model swin --inference  # no-grad forward
    python tools/analysis_tools/benchmark_backbone.py --model vitdet  # vs transformers' ViTDet-B
    python tools/analysis_tools/benchmark_backbone.py --model dinov2  # vs transformers' DINOv2-B

``--input``'s H and W must be multiples of 4 for CvT, 16 for ViTDet and 14 for DINOv2:
transformers' models drop a remainder of the patch where mmvtx pads it, so the two would do
different work (and their outputs would differ or not even compare); Swin and ViT take any size
(mmdet and mmseg pad as mmvtx does).

Timing alternates the two models step by step (so that both see the same machine state) and
reports the median. Peak memory: on CUDA ``max_memory_allocated``; on the CPU the rise of the
process's peak resident set (VmHWM, reset just before) during one step, each model in a
fresh subprocess with large allocations served by mmap so that frees are seen at once.

On the CPU, glibc's allocator hands blocks over 32 MiB back to the OS when they are freed, so
every large tensor of a step pays page faults again (at Swin-T stage 1 they cost more than the
GEMM writing the tensor). ``--reuse-memory`` re-runs the timing with glibc told to keep such
blocks (``GLIBC_TUNABLES`` mmap/trim thresholds): both models gain, and the ratio compares
compute, not page faults. ``MMVTX_ONEDNN_LINEAR=0``/``1`` times mmvtx with its linear maps on
``F.linear`` (MKL) or through oneDNN (default: oneDNN on AMD CPUs only;
``mmvtx/models/layers/linear.py``); the header line says which. ``MMVTX_BIAS_GRAD=sdpa`` or
``recompute`` picks how Swin's relative position bias is trained (default: ``sdpa`` on CUDA,
``recompute`` on the CPU; ``mmvtx/models/layers/attention.py``).

The FLOPs of each model's step are counted from the operators it runs
(``torch.utils.flop_counter``, fused attention included: ``mmvtx/utils/flops.py``) and turned
into achieved TFLOP/s; on a GPU whose dense fp16/bf16 peak is known (H100, H200: 989 TFLOP/s)
with ``--amp`` also into model FLOP utilisation (MFU).
"""
import argparse
import os
import os.path as osp
import statistics
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402


REUSE_MEMORY = 'glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=17179869184'
DEFAULT_INPUT = {'swin': '2x3x512x512', 'vit': '2x3x512x512', 'cvt': '1x3x800x800',
                 'vitdet': '1x3x1024x1024', 'dinov2': '2x3x518x518'}
# what H and W must be multiples of for the two models to do the same work: mmvtx pads a
# remainder of the patch (stride) where these references' convolutions drop it (mmdet's Swin
# and mmseg's ViT pad as mmvtx does)
SIZE_MULTIPLE = {'cvt': 4, 'vitdet': 16, 'dinov2': 14}


def parse_input(text: str, model: str) -> list:
    """``BxCxHxW`` -> ``[B, C, H, W]``; ValueError saying what is wrong (for ``--input``)."""
    try:
        shape = [int(v) for v in text.lower().split('x')]
    except ValueError:
        shape = []
    if len(shape) != 4:
        raise ValueError('expected BxCxHxW, four integers, e.g. 2x3x512x512')
    b, c, h, w = shape
    if b < 1 or h < 1 or w < 1:
        raise ValueError('batch, height and width must be >= 1')
    if c != 3:
        raise ValueError(f'{c} channels; the backbones take 3 (RGB)')
    m = SIZE_MULTIPLE.get(model, 1)
    if h % m or w % m:
        raise ValueError(
            f'--model {model} needs H and W multiples of {m}: the reference crops what mmvtx '
            f'pads, so the two would do different work (e.g. {b}x{c}x{max(m, h // m * m)}x'
            f'{max(m, w // m * m)})')
    return shape


def build_pair(model: str):
    """(ours, reference, reference name) with the reference's weights loaded into ours."""
    import mmvtx  # noqa: F401
    from mmvtx.utils import load_backbone_checkpoint
    if model == 'swin':
        from mmdet.models.backbones import SwinTransformer as Ref
        from mmvtx.models.backbones.swin import SwinTransformer
        ref = Ref(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                  drop_path_rate=0.0)
        ref.init_weights()
        ours = SwinTransformer('tiny', drop_path_rate=0.0, always_shift=True)
        name = "mmdet's SwinTransformer (Swin-T)"
    elif model == 'vit':
        from mmseg.models.backbones import VisionTransformer as Ref
        from mmvtx.models.backbones.vit import ViT
        ref = Ref(img_size=512, patch_size=16, embed_dims=768, num_layers=12, num_heads=12,
                  out_indices=(11,), drop_path_rate=0.0, final_norm=True,
                  norm_cfg=dict(type='LN', eps=1e-6), interpolate_mode='bicubic')
        ours = ViT('base', img_size=512, out_indices=(2,), drop_path_rate=0.0)
        name = "mmseg's VisionTransformer (ViT-B/16, last layer)"
    elif model == 'cvt':
        from transformers import CvtConfig, CvtModel
        from mmvtx.models.backbones.cvt import CvT
        ref = CvtModel(CvtConfig(drop_path_rate=[0.0] * 3), add_pooling_layer=False)
        ref.forward = _hf_hidden_states(ref.forward)
        ours = CvT('13', out_indices=(0, 1, 2), drop_path_rate=0.0)
        name = "transformers' CvtModel (CvT-13, all three stages)"
    elif model == 'vitdet':
        from transformers import VitDetBackbone, VitDetConfig
        from mmvtx.models.backbones.vit import ViT
        ref = VitDetBackbone(VitDetConfig(
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, image_size=1024,
            pretrain_image_size=224, patch_size=16, window_size=14,
            window_block_indices=[0, 1, 3, 4, 6, 7, 9, 10], use_relative_position_embeddings=True,
            drop_path_rate=0.0, out_features=['stage12']))
        ours = ViT('vitdet-b', out_indices=(2,), drop_path_rate=0.0)
        name = "transformers' VitDetBackbone (ViTDet-B: window 14, global 2/5/8/11, rel. pos.)"
    elif model == 'dinov2':
        from transformers import Dinov2Config, Dinov2Model
        from mmvtx.models.backbones.vit import ViT
        ref = Dinov2Model(Dinov2Config(hidden_size=768, num_hidden_layers=12,
                                       num_attention_heads=12, image_size=518, patch_size=14,
                                       drop_path_rate=0.0))
        # transformers resamples the position table without DINOv2's 0.1 offset
        ours = ViT('dinov2-b', out_indices=(2,), interpolate_offset=0.0, drop_path_rate=0.0)
        ref.forward = _stride16_map(ref.forward, 14, ours._to_stride16)
        name = "transformers' Dinov2Model (DINOv2-B/14, last layer)"
    else:
        raise ValueError(f'no benchmark pair for {model!r}')
    load_backbone_checkpoint(ours, ref.state_dict())
    return ours, ref, name


def _stride16_map(forward, patch, resample):
    """transformers' Dinov2Model returning its final patch tokens as a map resampled to the
    stride-16 grid by mmvtx's resampling (the same cheap op on both sides, so that the outputs
    compare and the times stay fair)."""
    def wrapped(x):
        tokens = forward(x).last_hidden_state[:, 1:]
        h, w = x.shape[-2] // patch, x.shape[-1] // patch
        return resample(tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w), *x.shape[-2:])
    return wrapped


def _hf_hidden_states(forward):
    """transformers' CvtModel returning its three stage maps, like the backbones do."""
    def wrapped(x):
        return tuple(forward(x, output_hidden_states=True).hidden_states)
    return wrapped


def outputs_of(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, 'feature_maps'):
        return list(out.feature_maps)
    if hasattr(out, 'last_hidden_state'):
        return [out.last_hidden_state]
    return [o for o in out if isinstance(o, torch.Tensor)]


# dense (no sparsity) fp16/bf16 tensor-core peaks, NVIDIA's data sheets (SXM parts)
DENSE_HALF_PEAK_TFLOPS = {'H100': 989.0, 'H200': 989.0, 'A100': 312.0}


def gpu_family(device: torch.device) -> str:
    """The GPU family of ``device`` (``'H100'``) or '' (CPU, unknown)."""
    if device.type != 'cuda':
        return ''
    name = torch.cuda.get_device_name(device)
    return next((k for k in DENSE_HALF_PEAK_TFLOPS if k in name), '')


def step(model, x, amp: bool, inference: bool = False):
    """One training step (forward + backward), or with ``inference`` one no-grad forward."""
    with torch.autocast(x.device.type, enabled=amp, dtype=torch.bfloat16 if
                        x.device.type == 'cpu' else torch.float16):
        if inference:
            with torch.no_grad():
                outputs_of(model(x))
            return
        outs = outputs_of(model(x))
    loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    for p in model.parameters():
        p.grad = None


def measure_memory_worker(args):
    """Runs in a subprocess: peak memory (MiB) of one step of ``args.which``."""
    from mmvtx.utils.benchmark import peak_memory_mib, report_peak
    torch.manual_seed(0)
    ours, ref, _ = build_pair(args.model)
    model = ours if args.which == 'ours' else ref
    model.train(not args.inference)  # not chained: mmdet's train() returns None
    del ours, ref
    device = torch.device(args.device)
    model.to(device)
    x = torch.randn(*args.shape, device=device)
    if args.compile and args.which == 'ours':
        model.compile(backend=args.compile)
        step(model, x, args.amp, args.inference)  # compiles; the measured step runs the code
    report_peak(peak_memory_mib(lambda: step(model, x, args.amp, args.inference), device))


def measure_memory(args, which: str) -> float:
    from mmvtx.utils.benchmark import run_memory_worker
    cmd = [sys.executable, __file__, '--model', args.model, '--input', args.input,
           '--device', args.device, '--memory-worker', which] + (['--amp'] if args.amp else []) + (
               ['--inference'] if args.inference else []) + (
               ['--compile', args.compile] if args.compile else [])
    return run_memory_worker(cmd)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', choices=['swin', 'vit', 'cvt', 'vitdet', 'dinov2'],
                        default='swin', help="the backbone and its reference: mmdet's Swin-T, "
                        "mmseg's ViT-B, transformers' CvT-13, ViTDet-B, DINOv2-B (default swin)")
    parser.add_argument('--input', help='BxCxHxW (default: 2x3x512x512 for Swin and ViT, '
                        '1x3x800x800 for CvT, 1x3x1024x1024 for ViTDet, 2x3x518x518 for '
                        'DINOv2; H and W multiples of 4 for CvT, 16 for ViTDet, 14 for DINOv2)')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N (default cpu)')
    parser.add_argument('--amp', action='store_true',
                        help='autocast: float16 on CUDA, bfloat16 on the CPU')
    parser.add_argument('--steps', type=int, default=5, help='timed steps per model')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed steps per model before the timed ones (default 1)')
    parser.add_argument('--inference', action='store_true',
                        help='time a no-grad forward in eval mode instead of a training step')
    parser.add_argument('--reuse-memory', action='store_true',
                        help='time with glibc keeping large freed blocks (no page-fault noise)')
    parser.add_argument('--compile', nargs='?', const='inductor', metavar='BACKEND',
                        help='torch.compile the mmvtx model (the reference stays eager); the '
                        'compile time is reported apart from the timed steps')
    parser.add_argument('--memory-worker', dest='which', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f'--steps {args.steps}: must be >= 1')
    if args.warmup < 0:
        parser.error(f'--warmup {args.warmup}: must be >= 0')
    # importing mmvtx registers everything (seconds): not before --help and the flags' checks
    from mmvtx.utils.benchmark import alternate_timing, check_device
    from mmvtx.utils.flops import count_flops
    problem = check_device(args.device)
    if problem:
        parser.error(f'--device {args.device}: {problem}')
    args.input = args.input or DEFAULT_INPUT[args.model]
    try:
        args.shape = parse_input(args.input, args.model)
    except ValueError as e:
        parser.error(f'--input {args.input}: {e}')
    if args.reuse_memory and os.environ.get('GLIBC_TUNABLES') != REUSE_MEMORY:
        env = dict(os.environ, GLIBC_TUNABLES=REUSE_MEMORY)  # read by glibc at start only
        os.execve(sys.executable, [sys.executable, osp.abspath(__file__)] + sys.argv[1:], env)
    if args.which:
        return measure_memory_worker(args)

    device = torch.device(args.device)
    torch.manual_seed(0)
    ours, ref, ref_name = build_pair(args.model)
    ours.to(device).train(not args.inference)
    ref.to(device).train(not args.inference)
    x = torch.randn(*args.shape, device=device)
    flops = {name: count_flops(lambda: step(model, x, args.amp, args.inference)).total
             for name, model in (('ours', ours), ('ref', ref))}  # eager (before compiling)
    compile_s = None
    if args.compile:
        import time
        ours.compile(backend=args.compile)
        start = time.perf_counter()
        step(ours, x, args.amp, args.inference)
        compile_s = time.perf_counter() - start
    with torch.no_grad():
        diff = max((a.float() - b.float()).abs().max().item()
                   for a, b in zip(outputs_of(ref(x)), outputs_of(ours(x))))
    times = alternate_timing({'ours': lambda: step(ours, x, args.amp, args.inference),
                              'ref': lambda: step(ref, x, args.amp, args.inference)},
                             args.steps, args.warmup, device)
    from mmvtx.models.layers.linear import cpu_vendor, onednn_linear_default
    t_ours, t_ref = statistics.median(times['ours']), statistics.median(times['ref'])
    m_ours, m_ref = measure_memory(args, 'ours'), measure_memory(args, 'ref')
    print(f'{args.model}: mmvtx vs {ref_name}, input {args.input}, {args.device}'
          f'{" AMP" if args.amp else " fp32"}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads'
          f'{", large blocks reused" if os.environ.get("GLIBC_TUNABLES") == REUSE_MEMORY else ""}'
          + (f'{", mmvtx linear through oneDNN" if onednn_linear_default() else ""}'
             f' ({cpu_vendor() or "unknown"} CPU)' if args.device == 'cpu' else ''))
    what = 'inference (no-grad forward, eval mode)' if args.inference else 'train step (fwd+bwd)'
    if compile_s is not None:
        print(f'  mmvtx compiled with torch.compile(backend={args.compile!r}): compile and first '
              f'step {compile_s:.1f} s (not in the timings below)')
    print(f'  max |output diff| ({"eval" if args.inference else "train"} mode, same weights): '
          f'{diff:.2e}')
    print(f'  {what} median of {args.steps}: mmvtx {t_ours:.3f} s, '
          f'reference {t_ref:.3f} s, ratio {t_ours / t_ref:.2f}x')
    peak = DENSE_HALF_PEAK_TFLOPS.get(gpu_family(device)) if args.amp else None
    rate = {name: flops[name] / t / 1e12 for name, t in (('ours', t_ours), ('ref', t_ref))}
    print(f'  FLOPs of {"a forward" if args.inference else "a step"} '
          f'(torch.utils.flop_counter): mmvtx {flops["ours"] / 1e9:.1f} G, reference '
          f'{flops["ref"] / 1e9:.1f} G; achieved mmvtx {rate["ours"]:.3g} TFLOP/s, reference '
          f'{rate["ref"]:.3g} TFLOP/s' + (
              f'; MFU (of {peak:.0f} TFLOP/s dense half) mmvtx {rate["ours"] / peak:.1%}, '
              f'reference {rate["ref"] / peak:.1%}' if peak else ''))
    print(f'  peak memory of {"a forward" if args.inference else "a step"}: '
          f'mmvtx {m_ours:.0f} MiB, reference {m_ref:.0f} MiB, '
          f'ratio {f"{m_ours / m_ref:.2f}x" if m_ref > 0 else "n/a"}')


if __name__ == '__main__':
    main()
