"""What does a head experiment cost? `dvc exp run` and a queued sweep, timed and weighed, in a scratch repository.

    python -m benchmarks.experiments                        # 20 classes x 100 images at 64 px, a sweep of 4
    python -m benchmarks.experiments --quick                # 4 classes x 30 images at 32 px, a sweep of 2
    python -m benchmarks.experiments --code DIR --name experiments_before   # the pipeline as DIR has it

A scratch git + DVC repository (synthetic.repos) holds the pipeline (this checkout's, or DIR's with --code) and
a generated archive (synthetic.datasets) read as a local file, with the random-init ResNet50 weights file of
benchmarks.benchmark. After one full `dvc repro` and a commit it measures, each a fresh process as a user runs it:
  - `python -c "import keras"` (TensorFlow), the yardstick, before and after the experiments;
  - `dvc exp run -S train.learning_rate=...` (the dense head) and `dvc exp run -S train.head=logistic`: wall time,
    the stages it ran, and the growth of .dvc/cache;
  - each head stage forced alone (its dvc.yaml command run directly): wall time;
  - a no-op `dvc repro`;
  - a sweep: SWEEP head variants queued with `dvc exp run --queue`, then `dvc queue start`, waited for (polling
    `dvc queue status`): wall time and cache growth, in all and per experiment.
Ratios to the Keras import are printed side by side; the 1-minute load average is recorded before every step.
Nothing here is a test: no figure is asserted. Results go to benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.benchmark import WORK, fill_defaults, machine, save_and_show
from synthetic import repos as scratch_repo

HEAD_STAGES = ("train", "evaluate", "export")
KERAS_IMPORT = [sys.executable, "-c", "import keras"]


class Steps:
    """Runs commands in a scratch repository (DVC analytics off, this interpreter's bin first on PATH), logging
    each one and recording its wall time and the 1-minute load average before it."""

    def __init__(self, logs: Path):
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.env = {**scratch_repo.subprocess_env(), "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.load: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def __call__(self, step: str, args: list, cwd: Path, check: bool = True) -> str:
        self.load[step] = round(os.getloadavg()[0], 2)
        print(f"  {step} (load {self.load[step]}) ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = subprocess.run([str(a) for a in args], cwd=cwd, env=self.env, capture_output=True, text=True)
        self.seconds[step] = time.perf_counter() - start
        text = f"{result.stdout}\n{result.stderr}"
        (self.logs / f"{step}.log").write_text(f"$ {' '.join(map(str, args))}\n{text}")
        if check and result.returncode != 0:
            sys.exit(f"experiments: {step} exited {result.returncode}; log {self.logs / f'{step}.log'}\n{text[-3000:]}")
        print(f"  {step}: {self.seconds[step]:.1f} s", file=sys.stderr, flush=True)
        return text


def cache_bytes(repo: Path) -> int:
    """Bytes of the objects in the repository's DVC cache (.dvc/cache/files; the run-cache's small entries apart)."""
    files = repo / ".dvc" / "cache" / "files"
    return sum(p.stat().st_size for p in files.rglob("*") if p.is_file()) if files.is_dir() else 0


def output_sizes(repo: Path) -> dict[str, int]:
    return {str(p.relative_to(repo)): p.stat().st_size for p in sorted((repo / "models").glob("*")) if p.is_file()}


def stage_commands(repo: Path) -> dict[str, str]:
    """The head stages' commands as dvc.yaml declares them (a stage may live in another dvc.yaml)."""
    commands = {}
    for dvcfile in sorted(repo.rglob("dvc.yaml")):
        if ".dvc" in dvcfile.relative_to(repo).parts:
            continue
        for name, stage in (yaml.safe_load(dvcfile.read_text()) or {}).get("stages", {}).items():
            if name in HEAD_STAGES:
                wdir = (dvcfile.parent / stage.get("wdir", ".")).resolve()
                commands[name] = (stage["cmd"], wdir)
    return commands


def wait_for_queue(steps: Steps, repo: Path, names: list[str], limit: float) -> dict[str, str]:
    """Poll `dvc queue status` until every queued experiment has finished (or limit seconds passed)."""
    deadline = time.monotonic() + limit
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        listing = subprocess.run(
            [sys.executable, "-m", "dvc", "queue", "status"], cwd=repo, env=steps.env, capture_output=True, text=True
        ).stdout
        lines = {name: next((line for line in listing.splitlines() if name in line), "") for name in names}
        states = {n: next((s for s in ("Success", "Failed") if s in text), "Running") for n, text in lines.items()}
        if all(state in ("Success", "Failed") for state in states.values()):
            break
        time.sleep(1)
    return states


def run(args: argparse.Namespace) -> dict:
    from benchmarks.benchmark import Runner, make_weights
    from synthetic.datasets import make_archive

    work = WORK / args.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    steps = Steps(work / "logs")
    load_start = os.getloadavg()
    archive = WORK / f"archive-{args.classes}x{args.per_class}-{args.size}px.tar.gz"
    if not archive.is_file():
        make_archive(archive, layout="legacy", n_classes=args.classes, per_class=args.per_class, size=args.size)
    weights = make_weights(Runner(work / "logs"), sys.executable)

    params = scratch_repo.small_params(str(archive), scratch_repo.md5_of(archive))
    params["features"].update(weights=str(weights), image_size=args.size, batch_size=64)
    params["train"].update(yaml.safe_load((Path(args.code or ".") / "params.yaml").read_text())["train"])
    source = scratch_repo.copy_pipeline(work / "pipeline", Path(args.code) if args.code else scratch_repo.ROOT)
    repo = scratch_repo.make_repo(work / "repo", params, source=source)
    dvc = [sys.executable, "-m", "dvc"]

    steps("full_repro", [*dvc, "repro"], repo)
    if (repo / "release" / "dvc.yaml").is_file():  # the classifier the baseline ships, exported once
        steps("full_export", [*dvc, "repro", "release/dvc.yaml"], repo)
    scratch_repo.commit_all(repo, "baseline")
    steps("warm_up_import_keras", KERAS_IMPORT, repo)

    # Each experiment right after a fresh `import keras`, repeated: on a shared machine the load changes by the
    # minute, so the ratio is taken per pair, and the pair with the fastest import is the least disturbed.
    experiments = {}
    lr = params["train"]["learning_rate"]
    settings = [(f"exp_dense_{i}", f"train.learning_rate={lr * 0.5 ** (i + 1):g}") for i in range(args.repeat)]
    settings += [("exp_logistic", "train.head=logistic")]
    for step, setting in settings:
        steps(f"import_keras_{step}", KERAS_IMPORT, repo)
        before = cache_bytes(repo)
        log = steps(step, [*dvc, "exp", "run", "evaluate", "-S", setting], repo)
        experiments[step] = {
            "setting": setting,
            "seconds": steps.seconds[step],
            "import_keras_s": steps.seconds[f"import_keras_{step}"],
            "ratio": steps.seconds[step] / steps.seconds[f"import_keras_{step}"],
            "stages_run": scratch_repo.stages_run(log),
            "cache_growth_bytes": cache_bytes(repo) - before,
            "outputs": output_sizes(repo),
        }
        scratch_repo.git(repo, "checkout", "-q", "--", ".")
        scratch_repo.dvc(repo, "checkout", "-q", check=False)

    forced = {}
    for name, (command, wdir) in stage_commands(repo).items():
        steps(f"alone_{name}", ["bash", "-c", command], wdir)
        forced[name] = steps.seconds[f"alone_{name}"]
    scratch_repo.dvc(repo, "checkout", "-q", "--force", check=False)
    steps("noop_repro", [*dvc, "repro"], repo)

    # The sweep: queue the variants, start one worker, wait for all of them.
    # Values none of the runs above used: DVC would restore those from its run-cache instead of training.
    variants = [f"train.learning_rate={lr * f:g}" for f in (1.5, 2, 3, 4, 6, 8)][: args.sweep]
    names = []
    for i, setting in enumerate(variants):
        log = steps(f"queue_{i}", [*dvc, "exp", "run", "--queue", "evaluate", "-S", setting], repo)
        names.append(re.search(r"Queued experiment '([^']+)'", log).group(1))
    before = cache_bytes(repo)
    steps.load["sweep"] = round(os.getloadavg()[0], 2)
    start = time.perf_counter()
    steps("queue_start", [*dvc, "queue", "start"], repo)
    states = wait_for_queue(steps, repo, names, limit=60 * 30)
    sweep_s = time.perf_counter() - start
    steps("queue_stop", [*dvc, "queue", "stop"], repo, check=False)
    sweep_growth = cache_bytes(repo) - before
    steps("import_keras_after", KERAS_IMPORT, repo)

    imports = [steps.seconds[f"import_keras_{step}"] for step, _ in settings] + [steps.seconds["import_keras_after"]]
    keras_s = min(imports)
    dense_runs = [e for step, e in experiments.items() if step.startswith("exp_dense")]
    dense = min(dense_runs, key=lambda e: e["import_keras_s"])  # the least disturbed pair
    return {
        "name": args.name,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "code": str(args.code) if args.code else None,
        "settings": {
            "classes": args.classes,
            "per_class": args.per_class,
            "image_size": args.size,
            "train": params["train"],
            "sweep": variants,
        },
        "machine": machine(),
        "load_average": {"start": list(load_start), "end": list(os.getloadavg()), "before_step_1min": steps.load},
        "import_keras_s": {"each": imports, "min": keras_s},
        "full_repro_s": steps.seconds["full_repro"],
        "experiments": experiments,
        "stage_alone_s": forced,
        "noop_repro_s": steps.seconds["noop_repro"],
        "sweep": {
            "experiments": len(names),
            "states": states,
            "seconds": sweep_s,
            "seconds_per_experiment": sweep_s / len(names),
            "cache_growth_bytes": sweep_growth,
            "cache_growth_per_experiment_bytes": sweep_growth / len(names),
        },
        "ratios_to_import_keras": {
            "exp_dense": dense["ratio"],
            "exp_dense_each": [e["ratio"] for e in dense_runs],
            "exp_dense_min_over_min": min(e["seconds"] for e in dense_runs) / keras_s,
            "exp_logistic": experiments["exp_logistic"]["ratio"],
            "sweep_per_experiment": sweep_s / len(names) / keras_s,
        },
        "head_keras_bytes": dense["outputs"].get("models/head.keras"),
    }


def table(r: dict) -> str:
    mb = lambda n: f"{n / 1e6:.1f} MB"  # noqa: E731
    k = r["import_keras_s"]
    keras_s = k["min"]
    load = r["load_average"]["before_step_1min"]
    rows = [("fresh `import keras` (TensorFlow), each", " / ".join(f"{x:.1f}" for x in k["each"]) + " s", "")]
    for step, e in r["experiments"].items():
        rows.append(
            (
                f"`dvc exp run -S {e['setting']}` ({', '.join(e['stages_run'])})",
                f"{e['seconds']:.1f} s against import {e['import_keras_s']:.1f} s: {e['ratio']:.2f}x; "
                f"cache +{mb(e['cache_growth_bytes'])}",
                f"{load[f'import_keras_{step}']} {load[step]}",
            )
        )
    rows.append(
        (
            "each stage forced alone",
            " / ".join(f"{name} {s:.1f} s" for name, s in r["stage_alone_s"].items()),
            " ".join(str(load[f"alone_{name}"]) for name in r["stage_alone_s"]),
        )
    )
    rows.append(("no-op `dvc repro`", f"{r['noop_repro_s']:.1f} s", f"{load['noop_repro']}"))
    s = r["sweep"]
    rows.append(
        (
            f"queued sweep of {s['experiments']} ({', '.join(sorted(set(s['states'].values())))})",
            f"{s['seconds']:.1f} s, {s['seconds_per_experiment']:.1f} s each "
            f"({s['seconds_per_experiment'] / keras_s:.2f}x import); cache +{mb(s['cache_growth_bytes'])}, "
            f"{mb(s['cache_growth_per_experiment_bytes'])} each",
            f"{load['sweep']}",
        )
    )
    rows.append(("models/head.keras", mb(r["head_keras_bytes"] or 0), ""))
    ratios = r["ratios_to_import_keras"]
    rows.append(
        (
            "head-only exp run / import keras (least disturbed pair; min over min)",
            f"{ratios['exp_dense']:.2f}x; {ratios['exp_dense_min_over_min']:.2f}x",
            "",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"Experiments {r['name']} ({r['code'] or 'this checkout'}), {r['settings']}", ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append("(last column: 1-minute load average before the step)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--classes", type=int, help="image classes (default 20; quick 4)")
    parser.add_argument("--per-class", type=int, help="images per class (default 100; quick 30)")
    parser.add_argument("--size", type=int, help="image side and features.image_size (default 64; quick 32)")
    parser.add_argument("--sweep", type=int, help="queued experiments (default 4; quick 2; at most 6)")
    parser.add_argument("--repeat", type=int, default=3, help="head-only experiments, each after an import (3)")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--name", help="results go to benchmarks/results/NAME.json (default experiments)")
    parser.add_argument("--code", type=Path, help="measure the pipeline files of DIR instead of this checkout's")
    args = parser.parse_args(argv)
    defaults = (
        dict(classes=4, per_class=30, size=32, sweep=2, name="experiments_quick")
        if args.quick
        else dict(classes=20, per_class=100, size=64, sweep=4, name="experiments")
    )
    fill_defaults(args, defaults)
    return save_and_show(args.name, run(args), table)


if __name__ == "__main__":
    main()
