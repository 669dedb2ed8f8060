"""Measuring helpers shared by ``tools/analysis_tools/benchmark_*.py``.

Timing alternates the compared steps iteration by iteration (so that both see the same machine
state) and the scripts report medians. Peak memory is measured for one step in a fresh
subprocess per model: on CUDA ``max_memory_allocated`` above what was allocated before the step;
on the CPU the rise of the process's peak resident set (VmHWM, reset just before the step
through ``/proc/self/clear_refs``), with large allocations served by mmap
(:func:`memory_worker_env`) so that freed memory leaves the resident set at once.
"""
import gc
import json
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Mapping, Sequence

import torch


def sync(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def proc_status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def peak_memory_mib(step: Callable[[], object], device: torch.device) -> float:
    """Peak memory (MiB) that one call of ``step`` adds to what is held before it."""
    if device.type == 'cuda':
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        sync(device)
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    gc.collect()
    with open('/proc/self/clear_refs', 'w') as f:  # resets the peak (VmHWM) to now
        f.write('5')
    base = proc_status_kib('VmRSS')
    step()
    return (proc_status_kib('VmHWM') - base) / 1024


def memory_worker_env() -> dict:
    """Environment of a memory-measuring subprocess: large blocks straight from mmap, so that
    freed memory leaves the resident set at once (and no inherited glibc tunables)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    env.pop('GLIBC_TUNABLES', None)
    return env


def report_peak(peak_mib: float):
    """What a memory worker prints: one JSON line, the last of its output."""
    print(json.dumps({'peak_mib': peak_mib}), flush=True)


def run_memory_worker(cmd: Sequence[str]) -> float:
    """Runs ``cmd`` (a script in its memory-worker mode) and returns the peak it reported."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=memory_worker_env())
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])['peak_mib']


def alternate_timing(steps: Mapping[str, Callable[[], object]], repeats: int, warmup: int,
                     device: torch.device) -> Dict[str, List[float]]:
    """Seconds of each of ``repeats`` calls of every step, after ``warmup`` untimed ones; the
    order of the steps is reversed every other iteration."""
    names = list(steps)
    times = {name: [] for name in names}
    for i in range(warmup + repeats):
        for name in (names[::-1] if i % 2 else names):
            sync(device)
            t = time.perf_counter()
            steps[name]()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def check_device(name: str) -> str:
    """Why ``--device name`` cannot run here ('' if it can): not a device name torch knows,
    a torch built without CUDA, or no GPU of that index visible (torch's own errors come later,
    as an AssertionError or a RuntimeError naming no flag)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        return 'not a device name (cpu, cuda or cuda:N)'
    if device.type == 'cpu':
        return ''
    if device.type != 'cuda':
        return f'{device.type} is not supported (cpu or cuda)'
    if torch.version.cuda is None:
        return f'this torch ({torch.__version__}) is built without CUDA'
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count or count == 0:
        return f'{count} CUDA GPU(s) visible (CUDA_VISIBLE_DEVICES, the driver)'
    return ''


def device_name(device: torch.device) -> str:
    """The GPU's name, or on the CPU ``lscpu``'s model name (and the core count)."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    model = None
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout
        model = next((line.split(':', 1)[1].strip() for line in out.splitlines()
                      if line.startswith('Model name:')), None)
    except (OSError, subprocess.CalledProcessError):
        pass
    if model is None:  # no lscpu: the kernel's name for it
        try:
            with open('/proc/cpuinfo') as f:
                model = next((line.split(':', 1)[1].strip() for line in f
                              if line.startswith('model name')), None)
        except OSError:
            pass
    return f'{model or "unknown CPU"} ({os.cpu_count()} CPUs)'
