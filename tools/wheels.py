"""Helpers of the Makefile's install routes (README "Install"): standard library only, so they run
before anything is installed, with any Python >= 3.8.

    wheels.py pins CONSTRAINTS [--drop NAME]... [--keep FILE]   the pins to install
    wheels.py collect CONSTRAINTS DIR --python 3.12 --glibc 2.28 --arch x86_64 [--drop/--keep]
                                  every wheel of those pins for that target into DIR
    wheels.py layer VENV_PYTHON [BASE_PYTHON]                   let a venv see BASE_PYTHON's packages

`--keep FILE` names packages that the target environment already has (`pip list --format=freeze`
there, or one name a line): they are used as installed, so they are neither pinned nor collected.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

LAYER_PTH = "_ugpcl_base_environment.pth"
BUILD_BACKEND = "setuptools>=68"  # pyproject.toml's [build-system]: the offline build of ugpcl needs it
# pip's legacy manylinux aliases (PEP 600): the glibc each one stands for
LEGACY_MANYLINUX = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}


def normalize(name: str) -> str:
    """PEP 503: case-insensitive, runs of '-', '_' and '.' are one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str | None:
    """The project name of one requirements/freeze line, or None for blanks, comments and options."""
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return normalize(match.group(0)) if match else None


def pins(constraints: list[str], drop: set[str] = frozenset(), keep: list[str] = ()) -> list[str]:
    """The constraint lines, less the packages in `drop` and the packages named in `keep`'s lines."""
    skip = {normalize(n) for n in drop} | {n for n in map(requirement_name, keep) if n}
    return [line for line in constraints if (name := requirement_name(line)) and name not in skip]


def platforms(glibc: str, arch: str) -> list[str]:
    """Every manylinux tag a machine with this glibc accepts (pip matches tags exactly)."""
    major, minor = (int(x) for x in glibc.split(".")[:2])
    if major != 2:
        raise ValueError(f"glibc {glibc}: only glibc 2.x is known to manylinux")
    tags = [f"manylinux_2_{n}_{arch}" for n in range(minor, 4, -1)]
    tags += [f"{legacy}_{arch}" for legacy, n in LEGACY_MANYLINUX.items() if n <= minor]
    return tags


def installs_on(filename: str, python: str, glibc: str, arch: str) -> bool:
    """Whether pip would install the wheel `filename` on the target, from its tags
    (name-version[-build]-python-abi-platform.whl, each tag a dot-separated set): a CPython
    `python` interpreter (cp3XY, py3XY or py3; abi3 for cp3X <= the target), ABI none, abi3 or
    cp3XY, platform any or a manylinux tag of the target's glibc. A wheel pip built from a
    source-only package on this machine carries this machine's tags and fails for another target."""
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return False
    pythons, abis, plats = (set(tag.split(".")) for tag in parts[-3:])
    major, minor = python.split(".")[:2]
    cp = f"cp{major}{minor}"
    older_cp = {f"cp{major}{n}" for n in range(2, int(minor) + 1)}
    python_ok = bool(pythons & {cp, f"py{major}{minor}", f"py{major}"}) or ("abi3" in abis and pythons & older_cp)
    abi_ok = bool(abis & {"none", "abi3", cp})
    plat_ok = "any" in plats or bool(plats & set(platforms(glibc, arch)))
    return python_ok and abi_ok and plat_ok


def wheel_key(filename: str) -> tuple[str, str]:
    """(normalized name, version without local label) of a wheel file name."""
    name, version = filename.split("-")[:2]
    return normalize(name), version.split("+")[0]


def prune(folder: Path, requirements: list[str]) -> list[Path]:
    """Delete the wheels in `folder` of pinned packages at another version (older collections)."""
    pinned = {}
    for line in requirements:
        if (name := requirement_name(line)) and "==" in line:
            pinned[name] = line.split("==", 1)[1].split("#")[0].strip()
    stale = [w for w in sorted(folder.glob("*.whl"))
             if wheel_key(w.name)[0] in pinned and wheel_key(w.name)[1] != pinned[wheel_key(w.name)[0]]]
    for wheel in stale:
        wheel.unlink()
    return stale


def collect(requirements: list[str], folder: Path, python: str, glibc: str, arch: str, pip: list[str],
            torch_index: str | None = None) -> bool:
    """Download the wheels of `requirements` for the target into `folder`; False if already there.

    Every pin but torch is fetched alone (--no-deps: the pins are the whole closure); torch is
    fetched with its dependencies, which depend on its build (a CUDA build from PyPI or
    `torch_index` brings the nvidia-* and triton wheels; the CPU build none). `folder/.complete`
    holds the requirements of the last complete collection, so an unchanged set costs no network
    (CI keeps the folder between runs). Pure-Python packages published as source only are built
    into wheels here; any wheel not for the target is an error."""
    text = "".join(f"{line}\n" for line in requirements + ([f"# torch from {torch_index}"] if torch_index else []))
    done = folder / ".complete"
    if done.is_file() and done.read_text() == text:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    done.unlink(missing_ok=True)
    (folder / "requirements.txt").write_text(text)
    for wheel in prune(folder, requirements):
        print(f"removed {wheel.name} (no longer pinned)")
    cp = "cp" + python.replace(".", "")
    target = ["--python-version", python, "--implementation", "cp", "--abi", cp]
    for tag in platforms(glibc, arch):
        target += ["--platform", tag]
    quiet = ["--quiet", "--disable-pip-version-check"]
    torch = [line for line in requirements if requirement_name(line) == "torch"]
    alone = folder / "requirements-no-deps.txt"
    alone.write_text("".join(f"{line}\n" for line in requirements if requirement_name(line) != "torch"))
    subprocess.run([*pip, "download", *quiet, "--no-deps", "-d", str(folder), *target, "-r", str(alone)], check=True)
    if torch:
        index = ["--index-url", torch_index] if torch_index else []
        subprocess.run([*pip, "download", *quiet, "--only-binary=:all:", "-d", str(folder), *target, *index,
                        "-c", str(folder / "requirements.txt"), *torch], check=True)
    for sdist in sorted([*folder.glob("*.tar.gz"), *folder.glob("*.zip")]):
        subprocess.run([*pip, "wheel", *quiet, "--no-deps", "-w", str(folder), str(sdist)], check=True)
        sdist.unlink()
    wrong = [w.name for w in folder.glob("*.whl") if not installs_on(w.name, python, glibc, arch)]
    if wrong:
        raise SystemExit(f"not wheels for Python {python}: {', '.join(wrong)} (built from source here: "
                         "collect on a machine with that Python, or pin a version that has wheels)")
    done.write_text(text)
    return True


def site_dirs(python: str) -> list[str]:
    code = "import site, sys; print('\\n'.join(site.getsitepackages()))"
    return subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.split()


def layer(venv_python: str, base_python: str | None) -> Path:
    """Make the venv see `base_python`'s packages after its own (a .pth file), or stop seeing them."""
    pth = Path(site_dirs(venv_python)[0]) / LAYER_PTH
    if base_python:
        pth.write_text("".join(f"{d}\n" for d in site_dirs(base_python)))
    elif pth.exists():
        pth.unlink()
    return pth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pins")
    p.add_argument("constraints", type=Path)
    p.add_argument("--drop", action="append", default=[])
    p.add_argument("--keep", type=Path, default=None)
    p = sub.add_parser("collect")
    p.add_argument("constraints", type=Path)
    p.add_argument("folder", type=Path)
    p.add_argument("--python", required=True, help="target Python version, e.g. 3.12")
    p.add_argument("--glibc", required=True, help="target glibc (`ldd --version` there), e.g. 2.28")
    p.add_argument("--arch", required=True, help="target architecture (`uname -m` there), e.g. x86_64")
    p.add_argument("--drop", action="append", default=[])
    p.add_argument("--keep", type=Path, default=None)
    p.add_argument("--torch-index", default=None, help="collect torch from this index (e.g. PyTorch's cu126)")
    p = sub.add_parser("layer")
    p.add_argument("venv_python")
    p.add_argument("base_python", nargs="?", default=None)
    args = parser.parse_args(argv)
    if args.command in ("pins", "collect"):
        keep = args.keep.read_text().splitlines() if args.keep else []
        wanted = pins(args.constraints.read_text().splitlines(), set(args.drop), keep)
    if args.command == "pins":
        print("\n".join(wanted))
    elif args.command == "collect":
        wanted.append(BUILD_BACKEND)
        fresh = collect(wanted, args.folder, args.python, args.glibc, args.arch, [sys.executable, "-m", "pip"],
                        args.torch_index)
        size = sum(f.stat().st_size for f in args.folder.glob("*.whl"))
        print(f"{args.folder}: {len(list(args.folder.glob('*.whl')))} wheels, {size / 1e6:.0f} MB"
              f"{'' if fresh else ' (already complete)'}")
    else:
        pth = layer(args.venv_python, args.base_python)
        print(f"{pth}: {'sees ' + args.base_python if args.base_python else 'sees only its own packages'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
