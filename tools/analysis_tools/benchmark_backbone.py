"""Time a training step (forward + backward) and measure the peak memory of an mmvtx backbone
against its reference implementation, same weights and input, in one run.

    python tools/analysis_tools/benchmark_backbone.py --model swin              # vs mmdet's Swin-T
    python tools/analysis_tools/benchmark_backbone.py --model swin --device cuda --amp

Timing alternates the two models step by step (so that both see the same machine state) and
reports the median. Peak memory: on CUDA ``max_memory_allocated``; on the CPU the rise of the
process's peak resident set during one step, each model measured in a fresh subprocess.
"""
import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

DEFAULT_INPUT = {'swin': '2x3x512x512', 'vit': '2x3x512x512', 'cvt': '1x3x800x800'}


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
    else:
        raise ValueError(f'no benchmark pair for {model!r} yet')
    load_backbone_checkpoint(ours, ref.state_dict())
    return ours, ref, name


def outputs_of(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, 'feature_maps'):
        return list(out.feature_maps)
    if hasattr(out, 'last_hidden_state'):
        return [out.last_hidden_state]
    return [o for o in out if isinstance(o, torch.Tensor)]


def step(model, x, amp: bool):
    with torch.autocast(x.device.type, enabled=amp, dtype=torch.bfloat16 if
                        x.device.type == 'cpu' else torch.float16):
        outs = outputs_of(model(x))
    loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    for p in model.parameters():
        p.grad = None


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def rss_kib() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024


def measure_memory_worker(args):
    """Runs in a subprocess: peak memory (MiB) of one step of ``args.which``."""
    torch.manual_seed(0)
    ours, ref, _ = build_pair(args.model)
    model = (ours if args.which == 'ours' else ref).train()
    del ours, ref
    device = torch.device(args.device)
    model.to(device)
    x = torch.randn(*args.shape, device=device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(model, x, args.amp)
        sync(device)
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:
        base = rss_kib()
        step(model, x, args.amp)
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps({'peak_mib': peak}))


def measure_memory(args, which: str) -> float:
    cmd = [sys.executable, __file__, '--model', args.model, '--input', args.input,
           '--device', args.device, '--memory-worker', which] + (['--amp'] if args.amp else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])['peak_mib']


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', choices=['swin', 'vit', 'cvt'], default='swin')
    parser.add_argument('--input', help='BxCxHxW (default: the issue\'s size for the model)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', action='store_true')
    parser.add_argument('--steps', type=int, default=5, help='timed steps per model')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--memory-worker', dest='which', help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.input = args.input or DEFAULT_INPUT[args.model]
    args.shape = [int(v) for v in args.input.lower().split('x')]
    if args.which:
        return measure_memory_worker(args)

    device = torch.device(args.device)
    torch.manual_seed(0)
    ours, ref, ref_name = build_pair(args.model)
    ours.to(device).train()
    ref.to(device).train()
    x = torch.randn(*args.shape, device=device)
    with torch.no_grad():
        diff = max((a.float() - b.float()).abs().max().item()
                   for a, b in zip(outputs_of(ref(x)), outputs_of(ours(x))))
    times = {'ours': [], 'ref': []}
    for i in range(args.warmup + args.steps):
        for which, model in (('ref', ref), ('ours', ours)) if i % 2 else (('ours', ours),
                                                                           ('ref', ref)):
            sync(device)
            t = time.perf_counter()
            step(model, x, args.amp)
            sync(device)
            if i >= args.warmup:
                times[which].append(time.perf_counter() - t)
    t_ours, t_ref = statistics.median(times['ours']), statistics.median(times['ref'])
    m_ours, m_ref = measure_memory(args, 'ours'), measure_memory(args, 'ref')
    print(f'{args.model}: mmvtx vs {ref_name}, input {args.input}, {args.device}'
          f'{" AMP" if args.amp else " fp32"}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads')
    print(f'  max |output diff| (train mode, same weights): {diff:.2e}')
    print(f'  train step (fwd+bwd) median of {args.steps}: mmvtx {t_ours:.3f} s, '
          f'reference {t_ref:.3f} s, ratio {t_ours / t_ref:.2f}x')
    print(f'  peak memory of a step: mmvtx {m_ours:.0f} MiB, reference {m_ref:.0f} MiB, '
          f'ratio {m_ours / m_ref:.2f}x')


if __name__ == '__main__':
    main()
