"""Peak memory, each measurement in a fresh process.

CPU torch keeps no allocator statistics, so a fresh subprocess builds one model, reads its peak
resident set size, runs the phase (3 training steps, or one cached generation), and reports how
much the peak grew: activations, gradients and optimizer state, or the KV cache and decoding
activations. The model's own weights are in the baseline. Peak RSS belongs to one process, so
the subprocesses may run side by side (they run after every timing is done).

    python -m benchmarks.memory '{"arch": "gpt2", "impl": "configaformer", "phase": "train", "sizes": {...}}'
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TRAIN_STEPS = 3
ROOT = Path(__file__).resolve().parents[1]  # the directory holding the benchmarks package


def peak_rss_mib() -> tuple[float, str]:
    """(peak resident set size of this process so far in MiB, where the number came from).

    On Linux this reads VmHWM from /proc/self/status rather than ru_maxrss: Linux carries
    ru_maxrss over across execve, so a subprocess started by a parent that once held 1.5 GiB
    reports 1.5 GiB from its first line on and the increase over the steps reads as zero.
    VmHWM belongs to the address space, which exec replaces, so it starts afresh."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10, "VmHWM"  # kB
    import resource  # elsewhere: ru_maxrss (fine as long as the parent's peak stays below ours)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / 2**20 if sys.platform == "darwin" else peak / 2**10), "ru_maxrss"  # macOS: bytes


def measure(job: dict) -> dict:
    """In the subprocess: build, then peak RSS before and after the phase."""
    import torch

    from .archs import Sizes, gpt_config
    from .impls import build
    from .measure import Trainer, prompt_ids

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    sizes = Sizes(**job["sizes"])
    impl = build(job["impl"], gpt_config(job["arch"], sizes))
    if job["phase"] == "train":
        trainer = Trainer(impl, sizes)
        before, source = peak_rss_mib()
        for _ in range(TRAIN_STEPS):
            trainer.step()
    else:
        impl.model.eval()
        prompt = prompt_ids(sizes)
        before, source = peak_rss_mib()
        impl.generate(prompt, sizes.new_tokens)
    after, _ = peak_rss_mib()
    return {"peak_before_mib": before, "peak_after_mib": after, "increase_mib": after - before, "source": source}


def run_job(job: dict, module: str = "benchmarks.memory") -> dict:
    """`python -m module JSON` in a fresh process; the JSON object its last output line prints."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", module, json.dumps(job)],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement {module} {json.dumps(job)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_jobs(jobs: list[dict], parallel: int) -> list[dict]:
    with ThreadPoolExecutor(max(1, parallel)) as pool:
        return list(pool.map(run_job, jobs))


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
