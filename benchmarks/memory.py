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
    """(peak resident set size of this process so far in MiB, where the number came from): the
    product's own reading (configaformer.search.profile.peak_mib; Linux VmHWM, which a fresh
    process does not inherit from its parent, unlike ru_maxrss)."""
    import torch

    from configaformer.search.profile import peak_mib

    return peak_mib(torch.device("cpu")), "VmHWM" if Path("/proc/self/status").exists() else "ru_maxrss"


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
