"""Kill trials: SIGKILL `configaformer train` at random moments, inside checkpoint writes, and
`configaformer data prepare` at random moments; then check what a user would find.

    python benchmarks/crash_trials.py [--trials 20] [--kinds train,checkpoint,prepare]
                                      [--work /tmp/crash_trials] [--json PATH] [--seed 0]

Every trial runs the real command line in a process group and kills the group with SIGKILL
(no handler runs). Kinds:

  train       a kill at a random moment of a run (checkpoint every step): from its first logged
              step to a little past the time the reference took from there to its last step
  checkpoint  a kill the moment the temporary directory of a chosen step's checkpoint appears,
              so that it lands inside the write (the record says whether it did: the temporary
              was still there after the kill)
  prepare     a kill at a random moment of `data prepare`'s writing: from the moment its
              temporary directory appears to a little past the time the reference took from there
              to its end (a kill before that point finds nothing written)

After a training kill: the latest checkpoint must verify (its checksums) and load
(`Transformer.from_pretrained`); the next run (`--resume`, or a fresh start when no checkpoint
was written yet) must give losses bit-identical to an uninterrupted reference run at every step,
the same final weights (sha256), and leave no temporary directory (`checkpoints/.step_*`).
After a prepare kill (half the trials replace an older dataset, with --overwrite): the output is
absent, the older dataset intact, or the complete new one (each verified and compared by hash),
never anything else; the next run completes it, and no `.NAME.tmp-*` / `.NAME.old-*` is left
beside it.

Results go to WORK/results.json after every trial; running again with the same --work continues
where the last run stopped (so it can run in pieces). The summary table is printed at the end and
written with the records to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from configaformer import Transformer  # noqa: E402
from configaformer.data import PrepareOptions, prepare, verify  # noqa: E402
from configaformer.train.checkpoint import latest_checkpoint, verify_checkpoint  # noqa: E402

MODEL = {"dim_model": 128, "vocab_size": 258, "dim_rope": 16,
         "classifiers": [{"num_classes": 258, "head_type": "linear"}],
         "layers": [{"type": "Attention", "num_heads": 4, "dropout": 0.1},
                    {"type": "FFN", "ff_mult": 4, "dropout": 0.1}] * 3}
STEPS = 16
PREPARE_ARGS = ["--source", "python-stdlib", "--max-bytes", "24M", "--shard-tokens", "1Mi", "--quiet"]
OLD_ARGS = ["--source", "python-stdlib", "--max-bytes", "2M", "--val-fraction", "0.1", "--quiet"]
KINDS = ("train", "checkpoint", "prepare")


def env() -> dict[str, str]:
    paths = [str(ROOT / "src")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "configaformer", *args]


def start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as stderr:  # a file, not a pipe: a full pipe would stall the process
        return subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL the process group; whether it was still running."""
    running = proc.poll() is None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return running


def finish(args: list[str]) -> tuple[int, str]:
    proc = subprocess.run(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc.returncode, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""


# ---- training -----------------------------------------------------------------------------------
def run_file(work: Path, out: Path) -> Path:
    config = {"model": MODEL, "data": {"path": str(work / "data")}, "out_dir": str(out),
              "train": {"batch_size": 4, "seq_len": 64, "lr": 3e-3, "warmup_steps": 2, "max_steps": STEPS,
                        "eval_interval": 8, "eval_batches": 2, "log_interval": 1, "seed": 3, "progress": False,
                        "num_threads": 1},
              "checkpoint": {"interval": 1, "keep_last": 3}, "sample": {"max_new_tokens": 8}}
    path = out.parent / f"{out.name}.json"
    path.write_text(json.dumps(config))
    return path


def losses(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # being written
            continue
        if record["kind"] == "train":
            found.append((record["step"], record["loss"]))
    return found


def final_weights(run_dir: Path) -> str:
    return verify_checkpoint(latest_checkpoint(run_dir))["checksums"]["model.safetensors"]


def temporaries(run_dir: Path) -> list[str]:
    root = run_dir / "checkpoints"
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".step_")) if root.is_dir() else []


def reference_run(work: Path) -> dict:
    out = work / "train-reference"
    if (work / "reference.json").is_file():
        return json.loads((work / "reference.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    proc = start(cli("train", str(run_file(work, out))), work / "train-reference.log")
    first = last = None
    while proc.poll() is None:
        logged = len(losses(out))
        if first is None and logged:
            first = time.perf_counter() - began
        if last is None and logged == STEPS:
            last = time.perf_counter() - began
        time.sleep(0.005)
    if proc.returncode != 0:
        raise SystemExit(f"the reference run failed: see {work / 'train-reference.log'}")
    ref = {"losses": losses(out), "weights": final_weights(out), "first_step_s": first, "last_step_s": last,
           "seconds": time.perf_counter() - began}
    (work / "reference.json").write_text(json.dumps(ref))
    return ref


def training_trial(work: Path, kind: str, index: int, rng: random.Random, ref: dict) -> dict:
    out = work / kind / f"t{index:03d}"
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = run_file(work, out)
    record: dict = {"kind": kind, "trial": index}
    proc = start(cli("train", str(path)), out.parent / f"{out.name}.log")
    began = time.perf_counter()
    if kind == "train":
        delay = rng.uniform(0.0, 1.1 * (ref["last_step_s"] - ref["first_step_s"]))
        while proc.poll() is None and not losses(out):
            time.sleep(0.001)
        began = time.perf_counter()  # its first step is logged: training runs
        while proc.poll() is None and time.perf_counter() - began < delay:
            time.sleep(0.001)
        record["delay_after_first_step_s"] = round(delay, 3)
    else:
        step = rng.randint(1, STEPS - 1)
        prefix = f".step_{step:07d}."
        root = out / "checkpoints"
        while proc.poll() is None and time.perf_counter() - began < 10 * ref["seconds"]:
            if root.is_dir() and any(name.startswith(prefix) for name in os.listdir(root)):
                break
            time.sleep(0.0005)
        record["target_step"] = step
    record["running_when_killed"] = kill(proc)
    record["killed_after_s"] = round(time.perf_counter() - began, 3)
    record["steps_logged"] = len(losses(out))
    record["temporaries_after_kill"] = temporaries(out)
    if kind == "checkpoint":
        record["inside_write"] = any(name.startswith(f".step_{record['target_step']:07d}.")
                                     for name in record["temporaries_after_kill"])
    ckpt = latest_checkpoint(out)
    record["checkpoint"] = ckpt.name if ckpt else None
    record["checkpoint_loads"] = None
    if ckpt is not None:
        try:
            verify_checkpoint(ckpt)
            Transformer.from_pretrained(ckpt)
            record["checkpoint_loads"] = True
        except Exception as err:  # noqa: BLE001 (a finding, recorded)
            record["checkpoint_loads"], record["error"] = False, f"{type(err).__name__}: {err}"
    code, message = finish(cli("train", str(path), *(["--resume"] if ckpt else [])))
    record["next_run_exit"] = code
    if code != 0:
        record["error"] = message
    record["resumed_identical"] = code == 0 and losses(out) == [tuple(x) for x in ref["losses"]]
    record["weights_identical"] = code == 0 and final_weights(out) == ref["weights"]
    record["temporaries_after_next_run"] = temporaries(out)
    record["ok"] = (record["checkpoint_loads"] is not False and record["resumed_identical"]
                    and record["weights_identical"] and not record["temporaries_after_next_run"])
    return record


# ---- data prepare -------------------------------------------------------------------------------
def dataset_digest(path: Path) -> dict:
    manifest = json.loads((path / "manifest.json").read_text())
    return {split: [s["sha256"] for s in info["shards"]] for split, info in manifest["splits"].items()}


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def reference_prepare(work: Path) -> dict:
    """An uninterrupted preparation: its digest and timings (when its temporary directory appeared,
    when the output was renamed into place), and an older dataset (other settings) to replace."""
    if (work / "prepare-reference.json").is_file():
        return json.loads((work / "prepare-reference.json").read_text())
    out = work / "prepare-reference" / "ds"
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    began, writing, renamed = time.perf_counter(), None, None
    proc = start(cli("data", "prepare", "--out", str(out), *PREPARE_ARGS), out.parent / "reference.log")
    while proc.poll() is None:
        now = time.perf_counter() - began
        if writing is None and leftovers(out):
            writing = now
        if renamed is None and out.exists():
            renamed = now
        time.sleep(0.001)
    if proc.returncode != 0:
        raise SystemExit(f"the reference prepare failed: see {out.parent / 'reference.log'}")
    code, message = finish(cli("data", "prepare", "--out", str(work / "prepare-reference" / "old"), *OLD_ARGS))
    if code != 0:
        raise SystemExit(f"the older dataset failed: {message}")
    ref = {"writing_from_s": writing, "renamed_at_s": renamed or time.perf_counter() - began, "digest": dataset_digest(out),
           "old_digest": dataset_digest(work / "prepare-reference" / "old")}
    (work / "prepare-reference.json").write_text(json.dumps(ref))
    return ref


def prepare_trial(work: Path, index: int, rng: random.Random, ref: dict) -> dict:
    """Even trials prepare a new output, odd ones replace an older dataset (--overwrite)."""
    out = work / "prepare" / f"t{index:03d}" / "ds"
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    replacing = index % 2 == 1
    if replacing:
        shutil.copytree(work / "prepare-reference" / "old", out)
    args = cli("data", "prepare", "--out", str(out), *PREPARE_ARGS, *(["--overwrite"] if replacing else []))
    delay = rng.uniform(0.0, 1.15 * (ref["renamed_at_s"] - ref["writing_from_s"]))
    proc = start(args, out.parent / "killed.log")
    while proc.poll() is None and not any(".tmp-" in name for name in leftovers(out)):
        time.sleep(0.001)
    began = time.perf_counter()  # its temporary directory appeared: the writing began
    while proc.poll() is None and time.perf_counter() - began < delay:
        time.sleep(0.001)
    record: dict = {"kind": "prepare", "trial": index, "replacing": replacing,
                    "delay_after_writing_began_s": round(delay, 3), "running_when_killed": kill(proc)}
    record["leftovers_after_kill"] = leftovers(out)
    record["output_after_kill"] = "absent"
    if out.exists():
        problems = verify(out) if (out / "manifest.json").is_file() else ["no manifest.json"]
        digest = None if problems else dataset_digest(out)
        record["output_after_kill"] = ("new" if digest == ref["digest"] else "old" if digest == ref["old_digest"]
                                       else "HALF")
    code, message = finish(args)
    record["next_run_exit"] = code
    if code != 0:
        record["error"] = message
    record["next_run_complete"] = code == 0 and verify(out) == [] and dataset_digest(out) == ref["digest"]
    record["leftovers_after_next_run"] = leftovers(out)
    record["ok"] = (record["output_after_kill"] != "HALF" and record["next_run_complete"]
                    and not record["leftovers_after_next_run"])
    return record


# ---- the whole ----------------------------------------------------------------------------------
def summary(records: list[dict]) -> list[dict]:
    rows = []
    for kind in KINDS:
        mine = [r for r in records if r["kind"] == kind]
        if not mine:
            continue
        row = {"kind": kind, "trials": len(mine), "ok": sum(r["ok"] for r in mine),
               "killed while running": sum(r["running_when_killed"] for r in mine)}
        if kind == "prepare":
            row["replacing an older dataset"] = sum(r["replacing"] for r in mine)
            for state in ("absent", "old", "new", "HALF"):
                row[f"output after the kill: {state}"] = sum(r["output_after_kill"] == state for r in mine)
            row["kill inside the write (temporary left)"] = sum(bool(r["leftovers_after_kill"]) for r in mine)
            row["next run complete"] = sum(r["next_run_complete"] for r in mine)
            row["temporaries left after next run"] = sum(bool(r["leftovers_after_next_run"]) for r in mine)
        else:
            if kind == "checkpoint":
                row["kill inside a checkpoint write"] = sum(r["inside_write"] for r in mine)
            row["temporaries left after kill"] = sum(bool(r["temporaries_after_kill"]) for r in mine)
            row["a checkpoint existed"] = sum(r["checkpoint"] is not None for r in mine)
            row["it verified and loaded"] = sum(r["checkpoint_loads"] is True for r in mine)
            row["resumed losses bit-identical"] = sum(r["resumed_identical"] for r in mine)
            row["final weights identical"] = sum(r["weights_identical"] for r in mine)
            row["temporaries left after next run"] = sum(bool(r["temporaries_after_next_run"]) for r in mine)
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    for row in rows:
        print(f"\n{row['kind']}: {row['ok']} / {row['trials']} trials passed every check")
        for key, value in row.items():
            if key not in ("kind", "ok", "trials"):
                print(f"  {key:<40} {value} / {row['trials']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="trials of each kind (default 20)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: train, checkpoint, prepare")
    parser.add_argument("--work", type=Path, default=Path("/tmp/crash_trials"))
    parser.add_argument("--json", type=Path, help="also write the records and the summary here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"--kinds: unknown {sorted(unknown)}; choose from {', '.join(KINDS)}")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    records = json.loads(results_path.read_text()) if results_path.is_file() else []
    done = {(r["kind"], r["trial"]) for r in records}
    if {"train", "checkpoint"} & set(kinds) and not (work / "data" / "manifest.json").is_file():
        prepare(work / "data", PrepareOptions(sources=["python-stdlib"], max_bytes=400_000, val_fraction=0.1))
    refs = {}
    for kind in kinds:
        for index in range(args.trials):
            if (kind, index) in done:
                continue
            rng = random.Random(f"{args.seed}-{kind}-{index}")
            if kind == "prepare":
                refs.setdefault(kind, reference_prepare(work))
                record = prepare_trial(work, index, rng, refs[kind])
            else:
                refs.setdefault("train", reference_run(work))
                record = training_trial(work, kind, index, rng, refs["train"])
            records.append(record)
            results_path.write_text(json.dumps(records, indent=1))
            print(f"{kind} {index}: {'ok' if record['ok'] else 'FAILED ' + json.dumps(record)}", flush=True)
    rows = summary(records)
    print_table(rows)
    result = {"records": records, "summary": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
