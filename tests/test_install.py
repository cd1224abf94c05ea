"""The install routes of the Makefile (README "Install"): pins, wheel collection for a target, and
offline installs into fresh venvs with the network cut off.

The offline installs need a wheel folder of this machine: `make test` (and so CI) collects it with
`make wheels` and passes it as UGPCL_WHEELS; a plain `pytest` run skips them and says so."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("wheels_tool", ROOT / "tools" / "wheels.py")
wheels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheels)

CONSTRAINTS = ["# pinned", "numpy==2.4.6", "PyYAML==6.0.3", "torch==2.13.0", "zc.lockfile==4.0", ""]


def test_pins_drop_torch_and_keep_what_the_target_has():
    assert wheels.pins(CONSTRAINTS) == ["numpy==2.4.6", "PyYAML==6.0.3", "torch==2.13.0", "zc.lockfile==4.0"]
    assert wheels.pins(CONSTRAINTS, drop={"torch"}) == ["numpy==2.4.6", "PyYAML==6.0.3", "zc.lockfile==4.0"]
    freeze = ["pyyaml==6.0.2", "zc_lockfile @ file:///x", "-e git+https://x#egg=y", "# numpy", "einops"]
    assert wheels.pins(CONSTRAINTS, keep=freeze) == ["numpy==2.4.6", "torch==2.13.0"]


def test_platforms_every_manylinux_tag_up_to_the_target_glibc():
    tags = wheels.platforms("2.28", "x86_64")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_5_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux2014_aarch64" in wheels.platforms("2.17", "aarch64")
    assert "manylinux2014_x86_64" not in wheels.platforms("2.12", "x86_64")


@pytest.mark.parametrize("filename, ok", [
    ("einops-0.8.2-py3-none-any.whl", True),
    ("numpy-2.4.6-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", True),
    ("shfmt_py-4.2.0-py2.py3-none-manylinux2014_x86_64.whl", True),      # pure-Python tag, bundled binary
    ("cryptography-46.0.3-cp311-abi3-manylinux_2_28_x86_64.whl", True),  # stable ABI from an older CPython
    ("numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl", False),        # another Python
    ("numpy-2.4.6-cp312-cp312-manylinux_2_34_x86_64.whl", False),        # a newer glibc than the target's
    ("numpy-2.4.6-cp312-cp312-manylinux_2_28_aarch64.whl", False),       # another architecture
    ("yte-1.9.4-py3-none-linux_x86_64.whl", False),                      # built here from source: this machine's tag
    ("numpy-2.4.6-cp312-cp312-macosx_14_0_arm64.whl", False),
])
def test_a_wheel_installs_on_the_target_by_its_tags(filename, ok):
    assert wheels.installs_on(filename, "3.12", "2.28", "x86_64") is ok


def test_prune_deletes_wheels_no_longer_pinned(tmp_path):
    for name in ("numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl", "numpy-2.4.5-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "zc_lockfile-4.0-py3-none-any.whl",
                 "setuptools-84.2.1-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    removed = wheels.prune(tmp_path, ["numpy==2.4.6", "torch==2.13.0", "zc.lockfile==4.0", "setuptools>=68"])
    assert [w.name for w in removed] == ["numpy-2.4.5-cp311-cp311-manylinux_2_28_x86_64.whl"]
    assert len(list(tmp_path.glob("*.whl"))) == 4


def test_collect_is_a_no_op_when_the_folder_is_complete(tmp_path):
    (tmp_path / ".complete").write_text("einops==0.8.2\n")
    assert wheels.collect(["einops==0.8.2"], tmp_path, "3.12", "2.28", "x86_64", pip=["false"]) is False
    with pytest.raises(subprocess.CalledProcessError):  # a changed set downloads again (here: a failing pip)
        wheels.collect(["einops==0.8.1"], tmp_path, "3.12", "2.28", "x86_64", pip=["false"])
    assert not (tmp_path / ".complete").exists()


def test_layer_lets_a_venv_see_another_environment_and_undoes_it(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pth = wheels.layer(python, sys.executable)  # this test's environment: it has pytest
    assert pth.is_file()
    subprocess.run([python, "-c", "import pytest"], check=True)
    wheels.layer(python, None)
    assert not pth.exists()
    assert subprocess.run([python, "-c", "import pytest"], capture_output=True).returncode != 0


# ---------------------------------------------------------------- offline installs (make test / CI)


def offline_prefix() -> list[str]:
    """A command prefix that runs without a network: a new network namespace where we may make
    one; otherwise proxies that lead nowhere (with --no-index, pip has no reason to connect)."""
    for prefix in (["unshare", "--net"], ["unshare", "--net", "--map-root-user"]):
        if shutil.which(prefix[0]) and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return []


def offline_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    dead = "http://127.0.0.1:9"
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_NO_COMPILE="1", HOME=str(tmp),
               http_proxy=dead, https_proxy=dead, HTTP_PROXY=dead, HTTPS_PROXY=dead)
    return env


def make(target: str, tmp: Path, **variables) -> str:
    args = [f"{k}={v}" for k, v in variables.items()]
    done = subprocess.run([*offline_prefix(), "make", "--no-print-directory", target, *args], cwd=ROOT,
                          env=offline_env(tmp), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def run(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"]}).stdout.strip()


@pytest.fixture(scope="module")
def wheel_folder() -> Path:
    folder = os.environ.get("UGPCL_WHEELS")
    if not folder:
        pytest.skip("needs the wheels of this machine: run through `make test` (CI does), or set UGPCL_WHEELS "
                    "to a `make wheels` folder")
    assert (Path(folder) / ".complete").is_file(), f"{folder} is not a complete `make wheels` folder"
    return Path(folder)


def test_offline_install_into_a_fresh_venv(wheel_folder, tmp_path):
    """TORCH=pinned: every package, torch included, from the folder, with the network cut off."""
    venv = tmp_path / "venv"
    try:
        make("install-offline", tmp_path, PYTHON=sys.executable, VENV=venv, WHEELS=wheel_folder)
        assert run(venv / "bin" / "python", "import torch; print(torch.__version__)").startswith("2.13.0")
        version = subprocess.run([str(venv / "bin" / "ugpcl"), "--version"], check=True, capture_output=True,
                                 text=True).stdout
        assert version.strip() == "ugpcl 0.1.0"
        where = run(venv / "bin" / "python", "import ugpcl; print(ugpcl.__file__)")
        assert where == str(ROOT / "src" / "ugpcl" / "__init__.py")  # the checkout, editable
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_offline_install_keeps_the_torch_of_the_base_environment(wheel_folder, tmp_path):
    """TORCH=keep with KEEP: the GPU-node route. The base environment holds torch and what it needs
    (there: a CUDA build); the wheels are collected without those; the venv uses them as installed."""
    base, venv = tmp_path / "base", tmp_path / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(base)], check=True)
        pip = [str(base / "bin" / "python"), "-m", "pip", "install", "--quiet", "--find-links", str(wheel_folder),
               "-c", str(ROOT / "constraints.txt"), "torch"]
        subprocess.run([*offline_prefix(), *pip], check=True, env=offline_env(tmp_path), capture_output=True)
        freeze = tmp_path / "have.txt"
        freeze.write_text(run(base / "bin" / "python", "import importlib.metadata as m; "
                                                        "print('\\n'.join(d.name for d in m.distributions()))"))
        # the folder for the target: the same wheels less torch and what the base has (hard links)
        target = tmp_path / "wheels"
        target.mkdir()
        wanted = wheels.pins((ROOT / "constraints.txt").read_text().splitlines(), {"torch"},
                             freeze.read_text().splitlines())
        names = {wheels.requirement_name(line) for line in wanted} | {"setuptools"}
        for whl in wheel_folder.glob("*.whl"):
            if wheels.wheel_key(whl.name)[0] in names:
                os.link(whl, target / whl.name)
        (target / ".complete").write_text("")
        assert "torch" in freeze.read_text().split() and not list(target.glob("torch-*"))
        make("install-offline", tmp_path, PYTHON=base / "bin" / "python", VENV=venv, WHEELS=target, TORCH="keep",
             KEEP=freeze)
        torch_file = run(venv / "bin" / "python", "import torch; print(torch.__file__)")
        assert torch_file.startswith(str(base)), torch_file
        assert run(venv / "bin" / "python", "import einops; print(einops.__file__)").startswith(str(venv))
        assert subprocess.run([str(venv / "bin" / "ugpcl"), "--version"], check=True, capture_output=True,
                              text=True).stdout.strip() == "ugpcl 0.1.0"
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(venv, ignore_errors=True)
