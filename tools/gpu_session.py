"""A GPU session's work in as few calls as possible: pack here, benchmark and train there.

GPU machines lent for a short while (no network, commands of 10 minutes, 64 MiB carried, a few
files brought back) make every call count. This script is the plan, in code:

Here, with network to the package registries and ../shared/data beside the checkout:
    python tools/gpu_session.py pack
        .gpu/ (ignored): py3.12 wheels of what `ugpcl train`/`bench` need beyond the GPU image,
        the authors' code and its wheels (`make authors`), and the prepared ACDC file at 224 px.
        Prints the size that travels (the limit is 64 MiB) and the carry list.
On the GPU machine, from the repository root, carrying `.gpu`:
    python3 tools/gpu_session.py bench --out $OUT
        facts (GPU, torch), a search for ImageNet ResNet-50 weights, `ugpcl bench` of every method,
        the authors' step for the three methods they implemented and the ratio table, K jobs per
        GPU, a short training at the bench profile (straight through, then stopped halfway and
        resumed: `smoke` below), the sync detector, each speed switch alone (and the cost of
        train.deterministic), and last the smoke training again in deterministic mode, twice
        straight through; everything in $OUT/session.json,
        $OUT/compare.md and $OUT/session.log, written after every step, and our figures alone in
        $OUT/bench.json (for `ugpcl runs --bench`: the study's projected wall time).
    python3 tools/gpu_session.py train --out $OUT --budget 540 --parallel K RUN [RUN ...]
        trains the runs at the paper profile, seed 1337, K at a time on the one GPU (bench's
        processes_K steps say which K gives the most throughput), in the order given, until the
        budget (seconds) is spent: runs still going then get SIGTERM and stop at a resume point, and
        the same command on the same (still warm) machine resumes them. $OUT/train.json says how each
        run ended; $OUT/runs.tgz holds every run's records and console log (run.json, evaluations,
        logs; no checkpoints, which are too big to come back). Back here, `tools/gpu_study.py collect`
        files them under reports/gpu_acdc/ and `tools/gpu_study.py markdown` tables them.
    python3 tools/gpu_session.py lease --out $OUT RUN [RUN ...]
        all that a lease of one command holds (15 minutes of device time, its start included): bench's
        `ours` and `theirs`, then, from ours' step times (`ugpcl runs --bench`), trains those of the
        runs, in the order given, whose projected time plus --overhead fits in what the budget leaves
        (less --margin), with the ImageNet weights bench's search finds (else from scratch). --parallel
        auto: when they do not all fit one after another, bench's processes_2 and processes_4 steps on
        the heaviest method say how much longer a step takes while K share the GPU, and the K whose
        plan finishes the most runs is taken (`choose_parallel`). The plan is in $OUT/train.json and
        session.log, the runs' records in $OUT/runs.tgz as `train` makes them.
    python3 tools/gpu_session.py smoke --work DIR --json FILE [--data FILE] [--iterations N] [--repeat]
        (bench's `smoke` step) trains one run for N iterations three ways: straight through (a);
        stopped at N/2 at a resume point and resumed by the same command (b); and, when b's
        weights differ from a's or with --repeat, straight through again (c), which says how far two
        uninterrupted runs agree on this device. FILE gets a's wall time and both evaluations, and
        the agreement. Bench runs it twice: as configured, and with train.deterministic (--repeat).

The steps have their own time limits; a step that fails or runs out is recorded and the next
one runs. Nothing here is needed to use the project: it is how its GPU figures are made.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".gpu"
LIMIT_MIB = 64
# What `ugpcl train` and `ugpcl bench` import that the GPU image lacks (device README, KINDS.md),
# at the versions constraints.txt pins. Training and benchmarking import no snakemake, dvc or medpy.
DEVICE_LACKS = ("monai", "nibabel", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py")
PIP_DOWNLOAD = ["--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                *[a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                              "manylinux2014_x86_64", "manylinux1_x86_64") for a in ("--platform", p)]]
OURS_SITE, THEIRS_SITE = Path("/tmp/ugpcl-site"), Path("/tmp/authors-site")
SEED = 1337
# torchvision's ImageNet ResNet-50 files and where caches keep them. `model.weights` takes a
# torchvision state dict (.pth); timm's resnet50.tv_in1k holds the same weights under the same
# names as .safetensors, which `model.weights` reads as it is (ugpcl.models.resnet.read_safetensors).
WEIGHT_PATTERNS = ("~/.cache/torch/hub/checkpoints/resnet50-*.pth", "$TORCH_HOME/hub/checkpoints/resnet50-*.pth",
                   "~/.cache/huggingface/hub/models--timm--resnet50.tv_in1k/snapshots/*/model.safetensors",
                   "$HF_HOME/hub/models--timm--resnet50.tv_in1k/snapshots/*/model.safetensors")


STOP_MARGIN = 15  # seconds before the deadline at which `schedule` stops the runs still going


def set_options(settings) -> list[str]:
    """KEY=VALUE overrides as `ugpcl` options: --set KEY=VALUE for each."""
    return [a for setting in settings for a in ("--set", setting)]


def log(message: str, logfile: Path | None = None) -> None:
    line = f"[{datetime.now(timezone.utc).strftime('%H:%M:%S')}] {message}"
    print(line, flush=True)
    if logfile:
        with logfile.open("a") as f:
            f.write(line + "\n")


def write_json(path: Path, value) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def pins(names, constraints: Path = ROOT / "constraints.txt") -> list[str]:
    """`name==version` for each name, from constraints.txt (a name it lacks is an error)."""
    pinned = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pinned[name.strip().lower().replace("_", "-")] = version.strip()
    missing = [n for n in names if n not in pinned]
    if missing:
        raise SystemExit(f"error: {constraints} pins no {', '.join(missing)}\n"
                         "  fix: add them (pip freeze), then pack again")
    return [f"{n}=={pinned[n]}" for n in names]


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def tracked_mib() -> float:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return sum((ROOT / f).stat().st_size for f in out.split("\0") if f and (ROOT / f).is_file()) / 2**20


# --- here ---------------------------------------------------------------------------------------


def pack_command(args) -> int:
    wheels, authors = PACK / "wheels", PACK / "authors"
    wheels.mkdir(parents=True, exist_ok=True)
    log(f"py3.12 wheels of {', '.join(DEVICE_LACKS)} -> {wheels}")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", *PIP_DOWNLOAD,
                    "-d", str(wheels), *pins(DEVICE_LACKS)], check=True)
    log("the authors' code and its wheels (make authors)")
    subprocess.run(["make", "--no-print-directory", "authors", f"AUTHORS_REPO={args.authors_repo}"], cwd=ROOT,
                   check=True)
    shutil.rmtree(authors, ignore_errors=True)
    shutil.copytree(ROOT / ".authors" / "UGPCL", authors / "UGPCL")
    shutil.copytree(ROOT / ".authors" / "wheels", authors / "wheels")
    prepared = ROOT / "results" / "paper" / "data" / "acdc.h5"
    if not prepared.exists():
        log(f"preparing ACDC at the paper's settings -> {prepared}")
        local = ["--set", "data.acdc.source=local", "--set", f"data.acdc.local_dir={args.acdc_dir}"] \
            if args.acdc_dir else []
        subprocess.run([str(Path(sys.executable).parent / "ugpcl"), "prepare", "acdc", "--profile", "paper", *local],
                       cwd=ROOT, check=True)
    target = PACK / "acdc.h5"
    target.unlink(missing_ok=True)
    try:
        os.link(prepared, target)
    except OSError:
        shutil.copy2(prepared, target)
    dirty = git("status", "--porcelain", "--untracked-files=no")
    # the machine gets no .git: this names the commit its runs were made from
    (PACK / "COMMIT").write_text(f"{git('rev-parse', 'HEAD') or 'unknown'}{'-dirty' if dirty else ''}\n")
    total = folder_mib(PACK) + tracked_mib()
    log(f".gpu/ {folder_mib(PACK):.1f} MiB + tracked files {tracked_mib():.1f} MiB = {total:.1f} MiB "
        f"(limit {LIMIT_MIB} MiB)")
    if total > LIMIT_MIB:
        print(f"error: {total:.1f} MiB would travel, over the {LIMIT_MIB} MiB limit\n"
              "  fix: leave the authors' wheels out (bench --no-authors) or carry less", file=sys.stderr)
        return 2
    log('carry: [".gpu"]; one command per lease: python3 tools/gpu_session.py lease --out $OUT RUN... '
        '(or bench, train: see --help)')
    return 0


# --- on the GPU machine --------------------------------------------------------------------------


def install(wheel_dir: Path, site: Path, logfile: Path, unless: str) -> None:
    """The wheels into `site`, unless this Python already imports `unless` (a machine with our venv)."""
    if site.exists() or not wheel_dir.is_dir() or importlib.util.find_spec(unless) is not None:
        return
    log(f"installing {wheel_dir}/*.whl -> {site}", logfile)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(site), *glob.glob(f"{wheel_dir}/*.whl")],
                   check=True)


def environments(logfile: Path) -> tuple[dict, dict]:
    """Process environments for our code and for the authors' (their requirements conflict with ours)."""
    install(PACK / "wheels", OURS_SITE, logfile, unless="monai")
    install(PACK / "authors" / "wheels", THEIRS_SITE, logfile, unless="segmentation_models_pytorch")
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ours = {**os.environ, "PYTHONPATH": os.pathsep.join([str(OURS_SITE), str(ROOT / "src"), *path]),
            "PYTHONUNBUFFERED": "1", "UGPCL_COMMIT": commit()}
    theirs = {**os.environ, "PYTHONPATH": os.pathsep.join([str(THEIRS_SITE), *path]), "PYTHONUNBUFFERED": "1"}
    return ours, theirs


def git(*args: str) -> str | None:
    """A git command's output in this checkout; None without git or a repository (a GPU machine's copy)."""
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def commit() -> str:
    """The commit the tree was copied from: $UGPCL_COMMIT, git's, else the COMMIT file `pack` leaves."""
    if os.environ.get("UGPCL_COMMIT"):
        return os.environ["UGPCL_COMMIT"]
    marker = PACK / "COMMIT"
    return git("rev-parse", "HEAD") or (marker.read_text().strip() if marker.exists() else "unknown")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_weights() -> list[dict]:
    """ImageNet ResNet-50 files in the machine's torch hub and Hugging Face caches."""
    found = []
    for pattern in WEIGHT_PATTERNS:
        expanded = os.path.expandvars(os.path.expanduser(pattern))
        if "$" in expanded:
            continue  # an unset variable
        for name in sorted(glob.glob(expanded)):
            path = Path(name).resolve()
            found.append({"path": str(path), "bytes": path.stat().st_size, "sha256": sha256(path)})
    return found


class Session:
    """Steps run one after another, each a subprocess with its own time limit; the record is
    rewritten after every step so whatever finished comes back even if the call is cut short."""

    def __init__(self, out: Path, deadline: float, only: list[str] | None = None):
        self.out, self.deadline, self.only = out, deadline, only
        self.logfile = out / "session.log"
        self.record_file = out / "session.json"
        self.record = json.loads(self.record_file.read_text()) if self.record_file.exists() else {"steps": {}}

    def save(self) -> None:
        write_json(self.record_file, self.record)

    def step(self, name: str, argv: list[str], env: dict, limit: float, result: Path | None = None) -> dict | None:
        if self.only and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.only):
            return None
        left = self.deadline - time.monotonic()
        entry = {"argv": argv[1:], "limit_s": round(min(limit, left))}
        if left < 20:
            entry["status"] = "skipped: out of time"
            log(f"{name}: skipped, out of time", self.logfile)
        else:
            log(f"{name}: {' '.join(argv[1:])}", self.logfile)
            start = time.monotonic()
            with self.logfile.open("a") as f:
                # its own process group: a step past its limit is killed with every process it
                # started (`bench --processes K`), so none of them keeps the GPU busy for the next step
                proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                try:
                    rc = proc.wait(timeout=min(limit, left))
                    entry["status"] = "ok" if rc == 0 else f"failed (exit status {rc})"
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    entry["status"] = "timed out"
            entry["seconds"] = round(time.monotonic() - start, 1)
            if result is not None and result.exists():
                entry["result"] = json.loads(result.read_text())
                result.unlink()
            log(f"{name}: {entry['status']} ({entry['seconds']} s)", self.logfile)
        self.record["steps"][name] = entry
        self.save()
        return entry


def facts() -> dict:
    import torch

    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit(),
            "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, memory_gib=round(props.total_memory / 2**30, 1), cpus=os.cpu_count())
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                                             "--format=csv,noheader"], capture_output=True, text=True,
                                            timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


SWITCHES = (("channels_last", "train.speed.channels_last=true"),
            ("cudnn_benchmark", "train.speed.cudnn_benchmark=true"),
            ("fused_optimizer", "train.speed.fused_optimizer=true"), ("compile", "train.speed.compile=default"),
            ("fp32", "train.amp=none"), ("deterministic", "train.deterministic=true"))


def bench_command(args) -> int:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    session = Session(out, time.monotonic() + args.budget, args.only.split(",") if args.only else None)
    ours_env, theirs_env = environments(session.logfile)
    session.record["facts"] = facts()
    session.record["weights"] = find_weights()
    session.save()
    log(f"facts: {json.dumps(session.record['facts'])}; weights found: {len(session.record['weights'])}",
        session.logfile)
    py, tmp = sys.executable, out / "step.json"
    ugpcl = [py, "-m", "ugpcl.cli"]
    common = ["--profile", args.profile, "--device", args.device, "--steps", str(args.steps), "--warmup", "3"]
    # first what the tables need, then what tunes the defaults
    ours_and_theirs(session, args, ours_env, theirs_env)
    smoke_data = args.smoke_data or (PACK / "acdc.h5" if args.profile == "paper" else None)

    def smoke(name: str, *extra: str) -> list[str]:
        return [py, str(Path(__file__).resolve()), "smoke", "--profile", args.profile, "--device", args.device,
                "--iterations", str(args.smoke_iterations), "--work", str(args.work / name), "--json", str(tmp),
                *(["--data", str(smoke_data)] if smoke_data else []), *extra]

    session.step("smoke", smoke("smoke"), ours_env, 240, tmp)
    if not args.no_authors:
        session.step("ours_fp32", [*ugpcl, "bench", *common, "--method", "all", "--set", "train.amp=none",
                                   "--json", str(tmp)], ours_env, 240, tmp)
        write_comparison(session.record, out / "compare.md")
    session.step("sync_debug", [*ugpcl, "bench", *common[:4], "--steps", "2", "--warmup", "1", "--method", "all",
                                "--sync-debug", "error"], ours_env, 150)
    for k in (2, 4):
        session.step(f"processes_{k}", [*ugpcl, "bench", *common, "--method", "ugpcl", "--processes", str(k),
                                        "--json", str(tmp)], ours_env, 150, tmp)
    for name, setting in SWITCHES:
        for method in ("ugpcl", "supervised"):
            session.step(f"switch_{name}_{method}", [*ugpcl, "bench", *common, "--method", method, "--set", setting,
                                                     "--json", str(tmp)], ours_env, 180, tmp)
    # train.deterministic: two uninterrupted runs and a resumed one, bit for bit?
    session.step("smoke_deterministic", smoke("smoke_deterministic", "--set", "train.deterministic=true", "--repeat"),
                 ours_env, 300, tmp)
    return 0


def ours_and_theirs(session: Session, args, ours_env: dict, theirs_env: dict, sets: list[str] = ()) -> dict | None:
    """The steps `ours` (every method, with the overrides `sets`: $OUT/bench.json, which `ugpcl runs
    --bench` reads) and, unless --no-authors, `theirs` ($OUT/compare.md): bench's first, and all that
    `lease` measures. Ours' results."""
    out, py = session.out, sys.executable
    tmp = out / "step.json"
    ours = session.step("ours", [py, "-m", "ugpcl.cli", "bench", "--profile", args.profile, "--device", args.device,
                                 "--steps", str(args.steps), "--warmup", "3", "--method", "all", "--json", str(tmp),
                                 *set_options(sets)],
                        ours_env, 240, tmp)
    if ours and ours.get("result"):  # as `ugpcl bench --json` writes it
        write_json(out / "bench.json", ours["result"])
    if not args.no_authors:
        session.step("theirs", [py, "tools/authors_bench.py", "run", "--code", str(args.authors_code),
                                "--method", "all", "--device", args.device, "--steps", str(args.steps),
                                "--json", str(tmp)], theirs_env, 180, tmp)
        write_comparison(session.record, out / "compare.md")  # bench writes it again with ours in fp32
    return (ours or {}).get("result")


def write_comparison(record: dict, path: Path) -> None:
    """compare.md: ours (bf16 as configured, and fp32 as theirs) against the authors' step."""
    steps = record["steps"]
    if not all(steps.get(k, {}).get("result") for k in ("ours", "theirs")):
        return
    facts = record["facts"]
    text = [f"# Ours against taovv/UGPCL, {facts.get('device', 'cpu')}, torch {facts.get('torch')}, "
            f"commit {facts.get('commit', '?')[:10]}, {facts.get('date', '')[:10]}", "",
            "## Ours as configured (train.amp)", "", comparison(steps, "ours")]
    if steps.get("ours_fp32", {}).get("result"):
        text += ["## Ours in fp32, as theirs runs", "", comparison(steps, "ours_fp32")]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(text))
    os.replace(tmp, path)


def smoke_command(args) -> int:
    work, n = args.work.resolve(), args.iterations
    if n < 4:
        raise SystemExit("error: --iterations must be at least 4 (a resume point at N/4, the stop at N/2)")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sets = {"train.iterations": n, "train.val_every": n // 2, "train.checkpoint_every": n // 4,
            "train.log_every": max(n // 20, 1), "model.pretrained": "false",
            "methods.ugpcl.contrast_start": n // 4}  # UGPCL's pixel contrast and queue from the first quarter
    argv = [sys.executable, "-m", "ugpcl.cli", "train", "--profile", args.profile, "--run", args.run, "--seed",
            str(SEED), "--device", args.device, "--no-progress",
            *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")],
            *set_options(args.set),
            *(["--data", str(args.data)] if args.data else [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def train(name: str, *extra: str) -> Path:
        subprocess.run([*argv, "--out", str(work / name), *extra], check=True, env=env)
        return work / name

    start = time.monotonic()
    a = train("a")
    record = json.loads((a / "run.json").read_text())
    result = {"run": args.run, "profile": args.profile, "iterations": n, "device": record.get("device_name"),
              "train_time_s": record.get("train_time_s"), "command_s": round(time.monotonic() - start, 1)}
    for which, folder in (("best", "eval"), ("last", "eval-last")):
        summary = json.loads((a / folder / "summary.json").read_text())
        result[which] = {k: summary.get(k) for k in ("iteration", "dice", "jaccard", "hd95_medpy", "asd")}
    write_json(args.json, result)  # after each stage: a step stopped for time keeps what it measured
    train("b", "--stop-after", str(n // 2))
    result["resumed"] = agreement(a, train("b"))  # the same command again resumes from the resume point at n/2
    write_json(args.json, result)
    if args.repeat or not result["resumed"]["identical"]:
        result["repeated"] = agreement(a, train("c"))  # how far two uninterrupted runs agree here
        write_json(args.json, result)
    print(json.dumps(result, indent=2))
    return 0


def agreement(a: Path, b: Path) -> dict:
    """How far two runs of the same configuration agree: every tensor of their last checkpoints,
    and the loss at every logged iteration."""
    import torch

    from ugpcl.engine.checkpoint import read

    sa, sb = read(a / "checkpoints" / "last.pt")["state"], read(b / "checkpoints" / "last.pt")["state"]
    if sa.keys() != sb.keys():
        raise SystemExit(f"error: {a} and {b} hold different tensors: {sorted(sa.keys() ^ sb.keys())[:5]}")
    identical = all(torch.equal(sa[k], sb[k]) for k in sa)
    weight = max((float((sa[k].double() - sb[k].double()).abs().max()) for k in sa
                  if sa[k].is_floating_point() and sa[k].numel()), default=0.0)

    def losses(run: Path) -> dict[int, float]:
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
        return {row["t"]: row["loss"] for row in rows}

    la, lb = losses(a), losses(b)
    if la.keys() != lb.keys():
        raise SystemExit(f"error: {a} and {b} logged other iterations: {sorted(la)[:5]} against {sorted(lb)[:5]}")
    return {"identical": identical and la == lb, "max_weight_diff": weight,
            "max_loss_diff": max(abs(la[t] - lb[t]) for t in la), "logged": len(la)}


def schedule(jobs: dict[str, list[str]], parallel: int, deadline: float, logfile: Path, record: Path,
             env: dict, logs: Path, start_margin: float = 30, stop_margin: float = STOP_MARGIN,
             grace: float = 45) -> dict:
    """Run `jobs` (name -> argv) in order, at most `parallel` at a time, until `deadline` (monotonic).

    A job is started only while `start_margin` seconds are left; at `stop_margin` every job still
    running gets SIGTERM (the trainer stops at a resume point) and, `grace` seconds later, SIGKILL
    with the processes it started. Each job's output goes to `logs/<name>.log`; `record` (JSON) is
    rewritten at every start and end: status, start and end in seconds from the first start, exit status."""
    logs.mkdir(parents=True, exist_ok=True)
    threads = str(max(1, (os.cpu_count() or 1) // max(parallel, 1)))  # the cores shared out, not oversubscribed
    origin, queue, running = time.monotonic(), list(jobs), {}
    result = {name: {"status": "queued"} for name in jobs}

    def save(name: str, message: str) -> None:
        log(f"{name}: {message}", logfile)
        write_json(record, {"parallel": parallel, "threads_per_job": int(threads), "runs": result})

    def finish(name: str, status: str) -> None:
        proc, f = running.pop(name)
        f.close()
        entry = result[name]
        entry.update(status=status, exit_status=proc.returncode, end_s=round(time.monotonic() - origin, 1))
        save(name, f"{status} (exit status {proc.returncode}, {entry['end_s'] - entry['start_s']:.0f} s)")

    while queue or running:
        left = deadline - time.monotonic()
        while queue and len(running) < parallel:
            name = queue.pop(0)
            if left < start_margin:
                result[name]["status"] = "not started: out of time"
                save(name, "not started, out of time")
                continue
            f = (logs / f"{name}.log").open("a")
            running[name] = (subprocess.Popen(jobs[name], cwd=ROOT, env={**env, "OMP_NUM_THREADS": threads},
                                              stdout=f, stderr=subprocess.STDOUT, start_new_session=True), f)
            result[name].update(status="running", start_s=round(time.monotonic() - origin, 1))
            save(name, f"started: {' '.join(jobs[name][2:])} (at most {left - stop_margin:.0f} s)")
        for name in [n for n, (proc, _) in running.items() if proc.poll() is not None]:
            finish(name, "finished" if running[name][0].returncode == 0 else "failed")
        if running and deadline - time.monotonic() < stop_margin:
            for proc, _ in running.values():
                proc.terminate()  # SIGTERM: the trainer stops at a resume point
            stop = time.monotonic() + grace
            for name in list(running):
                proc = running[name][0]
                try:
                    proc.wait(timeout=max(stop - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                finish(name, "stopped for time")
        time.sleep(0.2)
    return result


def train_runs(args, runs: list[str], deadline: float, ours_env: dict, extra: dict | None = None) -> dict:
    """Train `runs` at `--profile`, seed 1337, `--parallel` at a time until `deadline`, and return how
    each ended; $OUT/train.json says so too (with `extra` beside), $OUT/runs.tgz holds their records."""
    out = args.out.resolve()
    logfile = out / "session.log"
    results = (args.results or ROOT / "results").resolve()
    sets = ["--set", f"model.weights={Path(args.weights).resolve()}"] if args.weights \
        else ["--set", "model.pretrained=false"]
    sets += set_options(args.set)
    if args.results:
        sets += ["--set", f"paths.results={results}"]
    data = PACK / "acdc.h5" if args.profile == "paper" and (PACK / "acdc.h5").exists() else None
    jobs = {run: [sys.executable, "-m", "ugpcl.cli", "train", "--profile", args.profile, "--run", run, "--seed",
                  str(SEED), "--device", args.device, "--no-progress", *sets,
                  # pack's prepared ACDC; a run of another dataset reads its profile's own prepared file
                  *(["--data", str(data)] if data and run.startswith("acdc") else [])]
            for run in runs}
    outcome = schedule(jobs, args.parallel, deadline, logfile, out / "train.json", ours_env,
                       results / args.profile / "logs" / "gpu_session")
    if extra:
        write_json(out / "train.json", {**json.loads((out / "train.json").read_text()), **extra})
    if any(r["status"] == "stopped for time" for r in outcome.values()):
        log("the same command on this machine resumes the runs stopped for time", logfile)
    bundle_runs(results / args.profile, out / "runs.tgz")
    return outcome


def train_command(args) -> int:
    """The runs at `--profile`, seed 1337, `--parallel` at a time on the one GPU, within `--budget`."""
    args.out.resolve().mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    ours_env, _ = environments(args.out.resolve() / "session.log")
    train_runs(args, args.runs, deadline, ours_env)
    return 0


def plan(projected: dict[str, float | None], available: float, overhead: float, slots: int = 1,
         slowdown: float = 1.0) -> dict[str, dict]:
    """Which of the runs (in the order given) to train in `available` seconds, `slots` at a time: each
    run goes to the slot that frees first (as `schedule` starts them), and is taken while its projected
    time, times `slowdown` (how much longer a run's step takes while `slots` runs share the device),
    plus `overhead` (start-up, compilation, the final evaluations) ends within `available`; a run
    that does not fit is left out and the next one tried. A run with no projection (its method not
    benchmarked, or no run of the profile) is left out."""
    free, chosen = [0.0] * slots, {}
    for run, seconds in projected.items():
        if seconds is None:
            chosen[run] = {"chosen": False, "why": "no projection: not a run of the profile, or its method unmeasured"}
            continue
        slot = min(range(slots), key=free.__getitem__)
        need = seconds * slowdown + overhead
        if free[slot] + need <= available:
            free[slot] += need
            chosen[run] = {"chosen": True, "projected_s": round(seconds * slowdown, 1),
                           "done_by_s": round(free[slot], 1)}
        else:
            chosen[run] = {"chosen": False, "projected_s": round(seconds * slowdown, 1),
                           "why": f"needs {need:.0f} s with the overhead, {max(available - free[slot], 0):.0f} s left"}
    return chosen


def choose_parallel(projected: dict[str, float | None], available: float, overhead: float,
                    slowdowns: dict[int, float]) -> tuple[int, dict[str, dict]]:
    """Of the numbers of runs at once measured (K -> each run's slowdown while K share the device;
    1 -> 1.0), the K whose plan finishes the most runs, then the earliest, then the smaller K: and its plan."""
    best = None
    for k, slowdown in sorted(slowdowns.items()):
        chosen = plan(projected, available, overhead, k, slowdown)
        done = [e["done_by_s"] for e in chosen.values() if e["chosen"]]
        key = (-len(done), max(done, default=0.0), k)
        if best is None or key < best[0]:
            best = (key, k, chosen)
    return best[1], best[2]


def measure_sharing(session: Session, args, ours_env: dict, method: str, k: int, alone: float) -> float | None:
    """Step `processes_K`: `ugpcl bench --processes K` of `method`, as bench's steps of that name; how much
    longer its step takes while K run at once than alone (`alone`: ours' median step), or None if it failed."""
    tmp = session.out / "step.json"
    entry = session.step(f"processes_{k}", [sys.executable, "-m", "ugpcl.cli", "bench", "--profile", args.profile,
                                            "--device", args.device, "--steps", str(args.steps), "--warmup", "3",
                                            "--method", method, "--processes", str(k), "--json", str(tmp),
                                            *set_options(args.set)], ours_env, 150, tmp)
    shared = _rows((entry or {}).get("result")).get(method)
    return shared["median_step_s"] / alone if shared and alone > 0 else None


def lease_command(args) -> int:
    """One short lease's one command: measure (`ours`, `theirs`), then train what the measurement says fits."""
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    session = Session(out, deadline)
    ours_env, theirs_env = environments(session.logfile)
    session.record.update(facts=facts(), weights=find_weights())
    session.save()
    if args.weights == "auto":   # ImageNet weights the machine's caches hold (hash-checked when read), else none
        found = session.record["weights"]
        args.weights = found[0]["path"] if found else None
        log(f"encoder: {args.weights or 'from scratch (no ImageNet weights found)'}", session.logfile)
    elif args.weights == "none":
        args.weights = None
    ours = _rows(ours_and_theirs(session, args, ours_env, theirs_env, args.set))   # measured as they will train
    if not ours:
        log("no step times measured (`ours` failed: session.log): nothing trained", session.logfile)
        return 1
    results = (args.results or ROOT / "results").resolve()
    prepared = results / args.profile / "data" / "acdc.h5"   # where the projection looks for the validation cases
    if args.profile == "paper" and (PACK / "acdc.h5").exists() and not prepared.exists():
        prepared.parent.mkdir(parents=True, exist_ok=True)
        prepared.symlink_to(PACK / "acdc.h5")
    listed = subprocess.run([sys.executable, "-m", "ugpcl.cli", "runs", "--profile", args.profile, "--format", "json",
                             "--bench", str(out / "bench.json"), "--set", f"paths.results={results}",
                             *set_options(args.set)],
                            cwd=ROOT, env=ours_env, capture_output=True, text=True, timeout=120)
    if listed.returncode != 0:
        log(f"`ugpcl runs --bench` failed: {listed.stderr.strip()[-2000:]}", session.logfile)
        return 1
    listed = {r["id"]: r for r in json.loads(listed.stdout)}
    projected = {run: listed.get(run, {}).get("projected_s") for run in args.runs}

    def left() -> float:
        return (deadline - time.monotonic() - STOP_MARGIN) * (1 - args.margin)

    # runs at once: K sharing the device, each run's step `slowdown` times as long as alone, measured on
    # the heaviest method asked for. auto: 1 when every run fits one after another, else the K of 1, 2, 4
    # whose plan finishes the most runs. A given K whose measurement fails counts as no gain (slowdown K).
    steps = {m: r["median_step_s"] for m, r in ours.items() if r.get("median_step_s")}
    wanted = [m for m in sorted({listed[r]["method"] for r in args.runs if r in listed}) if m in steps] or list(steps)
    heaviest = max(wanted, key=steps.__getitem__)
    if args.parallel == "auto":
        one = plan(projected, left(), args.overhead)
        candidates = [] if all(e["chosen"] for e in one.values() if "projected_s" in e) else [2, 4]
        slowdowns = {1: 1.0}
    else:
        candidates, slowdowns = ([int(args.parallel)], {}) if int(args.parallel) > 1 else ([], {1: 1.0})
    for k in candidates:
        measured = measure_sharing(session, args, ours_env, heaviest, k, steps[heaviest])
        log(f"sharing: {k} runs of {heaviest} at once, each step " +
            (f"{measured:.2f} times as long as alone" if measured else "not measured"), session.logfile)
        if measured:
            slowdowns[k] = measured
        elif args.parallel != "auto":
            slowdowns[k] = float(k)
    available = left()
    k, chosen = choose_parallel(projected, available, args.overhead, slowdowns)
    args.parallel = max(min(k, sum(e["chosen"] for e in chosen.values())), 1)   # no more slots than runs
    log(f"plan: {args.parallel} at a time (" + ", ".join(f"{k}: x{v:.2f}" for k, v in sorted(slowdowns.items()))
        + f" step time while sharing; {available:.0f} s available)", session.logfile)
    for run, entry in chosen.items():
        log(f"plan: {run}: " + (f"train (projected {entry['projected_s']:.0f} s)" if entry["chosen"]
                                else f"left out ({entry['why']})"), session.logfile)
    runs = [run for run, entry in chosen.items() if entry["chosen"]]
    extra = {"plan": chosen, "available_s": round(available, 1), "overhead_s": args.overhead,
             "sharing": {"method": heaviest, "slowdown": {str(k): round(v, 3) for k, v in sorted(slowdowns.items())}}}
    if not runs:
        write_json(out / "train.json", {"parallel": args.parallel, "runs": {}, **extra})
        log("no run fits what the budget leaves: nothing trained", session.logfile)
        return 0
    train_runs(args, runs, deadline, ours_env, extra)
    return 0


def bundle_runs(profile_dir: Path, target: Path) -> None:
    """Every run's records and the jobs' logs, without checkpoints or resume points (they cannot come back)."""
    tmp = target.with_name(f".{target.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for folder in (profile_dir / "runs", profile_dir / "logs" / "gpu_session"):
            for path in sorted(folder.rglob("*")) if folder.exists() else []:
                if path.is_file() and path.suffix != ".pt":
                    tar.add(path, arcname=str(path.relative_to(profile_dir)))
    os.replace(tmp, target)


# --- back here ------------------------------------------------------------------------------------


def _rows(result) -> dict[str, dict]:
    return {r["method"]: r for r in (result if isinstance(result, list) else [result])} if result else {}


def comparison(steps: dict, ours_step: str) -> str:
    """The authors_bench ratio table of one of our bench steps against theirs, or why there is none."""
    sys.path.insert(0, str(ROOT / "tools"))
    from authors_bench import BenchError, compare

    try:
        return compare(_rows(steps[ours_step]["result"]), _rows(steps["theirs"]["result"]))
    except BenchError as e:
        return f"not comparable: {e}\n"


def report(record: dict, iterations: int = 6000) -> str:
    """reports/benchmarks.md's section for one session: our step per method, the authors' beside
    it, K runs per GPU and each speed switch alone, from a session.json."""
    facts, steps = record.get("facts", {}), record.get("steps", {})
    ours = _rows(steps.get("ours", {}).get("result"))
    if not ours:
        raise SystemExit("error: the session has no result of the `ours` step\n"
                         "  fix: look at its status in session.json and session.log, and run bench again")
    any_row = next(iter(ours.values()))
    cuda = f" (CUDA {facts['cuda']})" if facts.get("cuda") else ""
    lines = [f"## {facts.get('device', any_row['device'])}, torch {facts.get('torch')}{cuda}, "
             f"{facts.get('date', any_row['date'])[:10]}, commit {facts.get('commit', 'unknown')[:10]}", "",
             f"`python3 tools/gpu_session.py bench` ({any_row['profile']} configuration: {any_row['image_size']} px, "
             f"width {any_row['width']}, batch {any_row['batch_size']} with {any_row['labeled_bs']} labeled, "
             f"{any_row['amp']} autocast; switches {any_row['speed']}).", "",
             "| method | median step (s) | p10-p90 (s) | images/s | peak memory (MiB) | "
             f"{iterations} iterations would take |", "|---|---|---|---|---|---|"]
    for m in sorted(ours):
        r = ours[m]
        lo, hi = r["step_s_p10_p90"]
        lines.append(f"| {m} | {r['median_step_s']:.4f} | {lo:.4f}-{hi:.4f} | {r['images_per_s']:.1f} "
                     f"| {r['peak_memory_mib']:.0f} | {r['median_step_s'] * iterations / 60:.0f} min |")
    theirs = _rows(steps.get("theirs", {}).get("result"))
    if theirs:
        for title, key in (("as configured", "ours"), ("in fp32, as theirs runs", "ours_fp32")):
            if steps.get(key, {}).get("result"):
                lines += ["", f"### Against taovv/UGPCL (commit {next(iter(theirs.values())).get('commit', '?')[:7]}), "
                          f"ours {title}", "", comparison(steps, key).rstrip()]
    # rows of `bench --processes K`: each run's step while K share the GPU (bench's steps time UGPCL,
    # lease's the heaviest method of its runs)
    sharing = {int(name.split("_")[1]): e for name, e in steps.items() if name.startswith("processes_")}
    shared = next((m for e in sharing.values() for m in _rows(e.get("result"))), "ugpcl")
    k_rows = [(1, ours.get(shared))] + [(k, _rows(e.get("result")).get(shared)) for k, e in sharing.items()]
    if len(k_rows) > 1:
        lines += ["", f"### {'UGPCL' if shared == 'ugpcl' else shared} runs sharing the GPU", "",
                  "| runs at once | total images/s | each run's median step (s) "
                  f"| each run's {iterations} iterations |",
                  "|---|---|---|---|"]
        for k, r in k_rows:
            if r is None:
                lines.append(f"| {k} | failed | | |")
                continue
            step = r["median_step_s"]
            lines.append(f"| {k} | {r.get('images_per_s_total', r.get('images_per_s'))} | {step:.4f} "
                         f"| {step * iterations / 60:.0f} min |")
    switch_rows = []
    for name, _ in SWITCHES:
        for m in ("ugpcl", "supervised"):
            entry = steps.get(f"switch_{name}_{m}", {})
            r = _rows(entry.get("result")).get(m)
            base = ours.get(m)
            if r and base:
                switch_rows.append(f"| {name} | {m} | {base['median_step_s']:.4f} | {r['median_step_s']:.4f} "
                                   f"| {base['median_step_s'] / r['median_step_s']:.2f} |")
            elif entry:
                switch_rows.append(f"| {name} | {m} | | {entry.get('status')} | |")
    if switch_rows:
        lines += ["", "### Each switch alone", "", "| switch | method | median step without (s) "
                  "| with (s) | speed-up |", "|---|---|---|---|---|", *switch_rows]
    smoke = steps.get("smoke")
    if smoke:
        lines += ["", "### A short training on this device", "", smoke_text(smoke)]
    deterministic = steps.get("smoke_deterministic")
    if deterministic:
        lines += ["", "### The same short training with `train.deterministic: true`", "", smoke_text(deterministic)]
    sync = steps.get("sync_debug")
    if sync:
        lines += ["", f"Sync detector (`ugpcl bench --method all --sync-debug error`): {sync['status']}."]
    return "\n".join(lines) + "\n"


def smoke_text(entry: dict) -> str:
    """The smoke step in words: what trained, its scores, and how exactly a resumed run matched."""
    r = entry.get("result")
    if not r:
        return f"`smoke`: {entry.get('status')} (session.log says why)."

    def score(s: dict) -> str:
        return f"Dice {100 * s['dice']:.2f}%, HD95 {s['hd95_medpy']:.2f}" if s.get("dice") is not None else "no score"

    def agree(d: dict) -> str:
        if d["identical"]:
            return "identical, bit for bit (weights and every logged loss)"
        return (f"not identical: weights differ by at most {d['max_weight_diff']:.3g}, logged losses by at most "
                f"{d['max_loss_diff']:.3g}")

    text = (f"`{r['run']}` at the {r['profile']} profile for {r['iterations']} iterations (from scratch; a "
            f"smoke test of the whole path, not a result): {r['train_time_s']:.0f} s of training, "
            f"{r['command_s']:.0f} s for the whole command (start-up and both evaluations included); "
            f"best checkpoint {score(r['best'])}, last {score(r['last'])}.")
    if "resumed" not in r:
        return text + f" The resume check did not finish: {entry.get('status')} (session.log says why)."
    text += f" Stopped halfway and resumed: {agree(r['resumed'])}."
    if "repeated" in r:
        text += f" Two uninterrupted runs: {agree(r['repeated'])}."
    elif not r["resumed"]["identical"]:
        text += f" Two uninterrupted runs: not compared ({entry.get('status')})."
    return text


def report_command(args) -> int:
    sys.stdout.write(report(json.loads(args.session.read_text())))
    return 0


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: at least 1")
    return value


def positive_or_auto(text: str) -> int | str:
    return text if text == "auto" else positive(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: build .gpu/ (wheels, the authors' code, prepared ACDC)")
    p.add_argument("--authors-repo", default="https://github.com/taovv/UGPCL", help="where to clone their code from")
    shared = ROOT.parent / "shared" / "data" / "ACDC"
    p.add_argument("--acdc-dir", type=Path, default=shared if shared.is_dir() else None,
                   help="ACDC in the SSL4MIS layout (default: ../shared/data/ACDC when present; else downloaded)")
    p.set_defaults(func=pack_command)
    b = sub.add_parser("bench", help="on the GPU machine: every benchmark, ours and theirs")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--budget", type=float, default=540, help="seconds for all steps (a device command has 600)")
    b.add_argument("--device", default="cuda")
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--no-authors", action="store_true", help="skip the authors' code")
    b.add_argument("--authors-code", type=Path, default=PACK / "authors" / "UGPCL", help="their checkout (pack's)")
    b.add_argument("--profile", default="paper", help="the configuration benchmarked (paper: the study's)")
    b.add_argument("--only", default=None, metavar="STEP,...",
                   help="run only these steps; shell patterns (ours, theirs, smoke, ours_fp32, sync_debug, "
                        "processes_*, switch_*, smoke_deterministic)")
    b.add_argument("--smoke-data", type=Path, default=None,
                   help="the prepared file of the smoke step (default: pack's .gpu/acdc.h5 at the paper profile, "
                        "else the profile's own)")
    b.add_argument("--smoke-iterations", type=int, default=60, help="the smoke step's training length")
    b.add_argument("--work", type=Path, default=Path("/tmp/ugpcl-gpu-session"),
                   help="where the smoke step's runs go (their checkpoints are too big to come back)")
    b.set_defaults(func=bench_command)
    m = sub.add_parser("smoke", help="on the GPU machine: a short training straight through, and stopped and resumed")
    m.add_argument("--work", type=Path, required=True, help="a folder for the runs (emptied first)")
    m.add_argument("--json", type=Path, required=True, help="where the result goes")
    m.add_argument("--run", default="acdc136_ugpcl")
    m.add_argument("--iterations", type=int, default=60)
    m.add_argument("--profile", default="paper")
    m.add_argument("--device", default="cuda")
    m.add_argument("--data", type=Path, default=None, help="prepared file (default: the profile's)")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="more overrides for `ugpcl train` (repeatable), e.g. model.weights=FILE")
    m.add_argument("--repeat", action="store_true",
                   help="train straight through a second time even when the resumed run matched (c)")
    m.set_defaults(func=smoke_command)
    t = sub.add_parser("train", help="on the GPU machine: train runs, K at a time, within the budget")
    t.add_argument("runs", nargs="+", help="run ids (ugpcl runs), e.g. acdc136_ugpcl, started in this order")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--budget", type=float, default=540, help="seconds for all runs (a device command has 600)")
    t.add_argument("--parallel", type=positive, default=1, metavar="K",
                   help="runs training at once on the device (bench's processes_K steps measure the throughput)")
    t.add_argument("--profile", default="paper")
    t.add_argument("--device", default="cuda")
    t.add_argument("--results", type=Path, default=None,
                   help="results folder (paths.results; default: the checkout's results/)")
    t.add_argument("--weights", default=None,
                   help="ImageNet ResNet-50 file found by bench (session.json: weights); default: pretrained=false")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="more overrides for every run's `ugpcl train` (repeatable)")
    t.set_defaults(func=train_command)
    le = sub.add_parser("lease", help="on the GPU machine, one command of a short lease: `ours` and `theirs`, "
                                      "then the runs the measured step times say will finish")
    le.add_argument("runs", nargs="+", help="run ids (ugpcl runs) in the order to take them, e.g. acdc136_ugpcl")
    le.add_argument("--out", type=Path, required=True)
    le.add_argument("--budget", type=float, default=540, help="seconds for everything (a device command has 600)")
    le.add_argument("--overhead", type=float, default=90,
                    help="seconds added to each run's projection for start-up, compilation and its final "
                         "evaluations (the smoke step's command_s - train_time_s measures it)")
    le.add_argument("--margin", type=float, default=0.1, help="fraction of the time left kept free of planned runs")
    le.add_argument("--parallel", type=positive_or_auto, default="auto", metavar="K",
                    help="runs training at once; auto (default): 1 if every run fits one after another, else "
                         "the K of 1, 2, 4 whose plan finishes the most runs, from each K's step time measured "
                         "while K share the device (steps processes_K)")
    le.add_argument("--profile", default="paper")
    le.add_argument("--device", default="cuda")
    le.add_argument("--steps", type=int, default=20, help="timed steps per method")
    le.add_argument("--no-authors", action="store_true", help="skip the authors' code")
    le.add_argument("--authors-code", type=Path, default=PACK / "authors" / "UGPCL", help="their checkout (pack's)")
    le.add_argument("--results", type=Path, default=None, help="results folder (default: the checkout's results/)")
    le.add_argument("--weights", default="auto",
                    help="ImageNet ResNet-50 file; auto (default): the first that bench's search finds in the "
                         "machine's caches, else model.pretrained=false; none: model.pretrained=false")
    le.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more overrides for every run's `ugpcl train` (repeatable)")
    le.set_defaults(func=lease_command)
    r = sub.add_parser("report", help="back here: reports/benchmarks.md's section from a session.json")
    r.add_argument("session", type=Path)
    r.set_defaults(func=report_command)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
