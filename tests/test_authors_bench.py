"""tools/authors_bench.py: times the authors' training loop (taovv/UGPCL) and compares it with ours.

The authors' code is not part of this repository (`make authors` fetches it), so these tests
build a stand-in checkout with the same layout and interfaces: `codes.utils.utils.parse_yaml` and
`Namespace`, trainers in `codes.trainers` built from config files with `train_step(batch, step,
save_image)`, `optimizer`, `scheduler` and, for the mean teacher, `update_ema_variables`. The
stand-in records what the harness did with it, so the tests check that the harness builds the
trainers the way their train.py does and runs their loop's iteration."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ugpcl.device import processor_name

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "authors_bench.py"
spec = importlib.util.spec_from_file_location("authors_bench", TOOL)
authors_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(authors_bench)

UTILS = '''
import yaml


class Namespace:
    def __init__(self, d):
        for k, v in d.items():
            self.__dict__[k] = Namespace(v) if isinstance(v, dict) else v


def parse_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)
'''

TRAINERS = '''
import json
import os

import torch


def _build(cfg):
    kwargs = dict(vars(cfg.kwargs))
    return kwargs


class _Base:
    def __init__(self, model=None, optimizer=None, scheduler=None, logger=None, device="cpu", labeled_bs=0, **rest):
        logger.info("building")
        self.model_kwargs = _build(model)
        self.model = torch.nn.Conv2d(3, 4, 3, padding=1).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=vars(optimizer.kwargs)["lr"])
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, 10)
        self.labeled_bs = labeled_bs
        self.steps, self.ema_steps = [], []
        self.rest = sorted(rest)

    def train_step(self, batch, step, save_image):
        assert not save_image
        self.steps.append(step)
        self.check(step)
        out = self.model(batch["image"])
        loss = torch.nn.functional.cross_entropy(out[: self.labeled_bs], batch["label"][: self.labeled_bs, 0].long())
        self.record(batch)
        return loss, {}, {}, {}

    def check(self, step):
        pass

    def record(self, batch):
        with open(os.environ["STANDIN_LOG"], "a") as f:
            f.write(json.dumps({"trainer": type(self).__name__, "model": self.model_kwargs, "steps": self.steps,
                                "ema_steps": self.ema_steps, "labeled_bs": self.labeled_bs, "rest": self.rest,
                                "image": list(batch["image"].shape), "label": list(batch["label"].shape),
                                "deterministic": torch.backends.cudnn.deterministic}) + "\\n")


class SupervisedTrainer(_Base):
    pass


class MeanTeacherTrainer(_Base):
    def __init__(self, ema_model=None, **kwargs):
        super().__init__(**kwargs)
        self.ema_kwargs = _build(ema_model)
        assert self.ema_kwargs["encoder_weights"] is None

    def update_ema_variables(self, step):
        self.ema_steps.append(step)


class UGPCLTrainer(_Base):
    def check(self, step):
        assert step > 1000, "the contrast term starts after iteration 1000"
'''

CONFIG = '''
dataset:
  name: acdc
  kwargs: {{labeled_bs: 8, batch_size: 16}}
train:
  name: {trainer}
  kwargs: {{labeled_bs: 8, max_iter: 6000}}
model:
  name: {model}
  kwargs: {{in_channels: 3, classes: 4, encoder_weights: imagenet}}
optimizer:
  name: SGD
  kwargs: {{lr: 0.01}}
logger: {{log_file: true}}
{extra}'''


@pytest.fixture
def standin(tmp_path):
    return make_standin(tmp_path / "UGPCL")


def make_standin(code: Path) -> Path:
    """A folder laid out like the authors' checkout, whose trainers record what they are asked to do."""
    (code / "codes" / "utils").mkdir(parents=True)
    (code / "codes" / "trainers").mkdir()
    (code / "codes" / "__init__.py").write_text("")
    (code / "codes" / "utils" / "__init__.py").write_text("")
    (code / "codes" / "utils" / "utils.py").write_text(UTILS)
    (code / "codes" / "trainers" / "__init__.py").write_text(TRAINERS)
    (code / "codes" / "trainers" / "ugpcl_trainer.py").write_text("")
    for method, trainer, model in (("supervised", "SupervisedTrainer", "UNet"), ("mt", "MeanTeacherTrainer", "UNet"),
                                   ("ugpcl", "UGPCLTrainer", "UNetTF")):
        path = code / authors_bench.CONFIGS[method]
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = "ema_model:\n  name: UNet\n  kwargs: {encoder_weights: imagenet}\n" if method == "mt" else ""
        path.write_text(CONFIG.format(trainer=trainer, model=model, extra=extra))
    (code / "COMMIT").write_text(authors_bench.AUTHORS_COMMIT + "\n")
    return code


def run_tool(*args, env_log=None, check=True):
    env = {"PATH": "/usr/bin:/bin", "STANDIN_LOG": str(env_log or "/dev/null"), "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=300)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_run_times_their_loop_for_each_method_as_their_train_py_builds_it(standin, tmp_path):
    log, result = tmp_path / "calls.jsonl", tmp_path / "theirs.json"
    run_tool("run", "--code", standin, "--method", "all", "--device", "cpu", "--size", 16, "--steps", 3,
             "--warmup", 2, "--json", result, env_log=log)
    rows = json.loads(result.read_text())
    assert [r["method"] for r in rows] == ["supervised", "mt", "ugpcl"]
    for r in rows:
        assert r["commit"] == authors_bench.AUTHORS_COMMIT and r["code"] == "taovv/UGPCL"
        assert (r["batch_size"], r["labeled_bs"], r["image_size"], r["steps"]) == (16, 8, 16, 3)
        assert r["median_step_s"] > 0 and r["images_per_s"] == pytest.approx(16 / r["median_step_s"], rel=0.01)
        assert re.fullmatch(re.escape(processor_name()) + r" \(\d+ threads\)", r["device"])  # as `ugpcl bench`
        lo, hi = r["step_s_p10_p90"]
        assert lo <= r["median_step_s"] <= hi
    calls = {}
    for line in log.read_text().splitlines():
        call = json.loads(line)
        calls[call["trainer"]] = call  # the last call of each trainer holds its whole history
    assert set(calls) == {"SupervisedTrainer", "MeanTeacherTrainer", "UGPCLTrainer"}
    for call in calls.values():
        # warm-up and timed iterations, numbered past their contrast warm-up as `ugpcl bench` does
        assert call["steps"] == [1001, 1002, 1003, 1004, 1005]
        assert call["model"]["encoder_weights"] is None  # never downloads ImageNet weights
        assert call["image"] == [16, 3, 16, 16] and call["label"] == [16, 1, 16, 16]
        assert call["deterministic"] is True  # their train.py's set_deterministic
        assert call["labeled_bs"] == 8
        # what their train.py hands the trainer: train.kwargs plus every other top-level section
        assert {"max_iter", "data_parallel", "resume_from"} <= set(call["rest"])
    assert calls["MeanTeacherTrainer"]["ema_steps"] == [1001, 1002, 1003, 1004]  # after each step (the 5th: after)
    assert calls["UGPCLTrainer"]["model"]["img_size"] == 16  # their Swin decoder is built for the image size
    assert "img_size" not in calls["SupervisedTrainer"]["model"]


def test_batch_override_and_a_single_method(standin, tmp_path):
    result = tmp_path / "one.json"
    run_tool("run", "--code", standin, "--method", "ugpcl", "--device", "cpu", "--size", 8, "--steps", 1,
             "--warmup", 0, "--batch", 4, 2, "--json", result)
    row = json.loads(result.read_text())
    assert (row["method"], row["batch_size"], row["labeled_bs"]) == ("ugpcl", 4, 2)


def test_run_refuses_a_folder_that_is_not_their_code(tmp_path):
    out = run_tool("run", "--code", tmp_path, "--device", "cpu", check=False)
    assert out.returncode == 2
    assert f"{tmp_path}: no codes/trainers/ugpcl_trainer.py" in out.stderr and "make authors" in out.stderr


def test_run_names_a_missing_requirement(standin, tmp_path):
    (standin / "codes" / "trainers" / "__init__.py").write_text("import segmentation_models_pytorch\n")
    out = run_tool("run", "--code", standin, "--method", "ugpcl", "--device", "cpu", check=False)
    assert out.returncode == 2
    assert "does not import: No module named 'segmentation_models_pytorch'" in out.stderr
    assert ".authors/site" in out.stderr


def bench_row(method, step, device="NVIDIA H100 80GB HBM3", batch=16, **extra):
    return {"method": method, "median_step_s": step, "images_per_s": round(batch / step, 2), "batch_size": batch,
            "labeled_bs": 8, "image_size": 224, "device": device, **extra}


def test_compare_gives_the_ratio_over_the_methods_both_codes_have():
    ours = {"supervised": bench_row("supervised", 0.05, batch=8), "mt": bench_row("mt", 0.12),
            "ugpcl": bench_row("ugpcl", 0.2), "cps": bench_row("cps", 0.3)}
    theirs = {"supervised": bench_row("supervised", 0.1, forwarded_images=16), "mt": bench_row("mt", 0.15),
              "ugpcl": bench_row("ugpcl", 0.5)}
    table = authors_bench.compare(ours, theirs).splitlines()
    assert len(table) == 2 + 3 and "cps" not in "".join(table)
    cells = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:-1]] for row in table[2:]}
    assert cells["supervised"][:5] == ["0.0500", "8", "0.1000", "16", "0.50"]
    assert cells["mt"][4] == "0.80" and cells["ugpcl"][4] == "0.40"
    assert cells["ugpcl"][5:] == ["80.0", "32.0"]


def test_compare_refuses_figures_that_are_not_comparable(tmp_path):
    with pytest.raises(authors_bench.BenchError, match="different devices: NVIDIA H100 80GB HBM3, cpu"):
        authors_bench.compare({"mt": bench_row("mt", 1, device="cpu")}, {"mt": bench_row("mt", 1)})
    with pytest.raises(authors_bench.BenchError, match="no method in common"):
        authors_bench.compare({"cps": bench_row("cps", 1)}, {"mt": bench_row("mt", 1)})
    small = bench_row("mt", 1)
    small["labeled_bs"] = 2
    with pytest.raises(authors_bench.BenchError, match="mt: ours was timed with labeled_bs 2, theirs with 8"):
        authors_bench.compare({"mt": small}, {"mt": bench_row("mt", 1)})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"method": "mt"}))
    out = run_tool("compare", bad, bad, check=False)
    assert out.returncode == 2 and f"{bad}: not a benchmark result" in out.stderr


def test_make_authors_fetches_the_papers_commit_and_its_pinned_requirements():
    """The Makefile's commit is the harness's, and every requirement is pinned (the wheels travel)."""
    makefile = (ROOT / "Makefile").read_text()
    assert f"AUTHORS_COMMIT := {authors_bench.AUTHORS_COMMIT}" in makefile
    lines = [line for line in (ROOT / "tools" / "authors-requirements.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines and all("==" in line for line in lines)
    assert {"segmentation-models-pytorch==0.2.0", "timm==0.4.12"} <= set(lines)
    assert ".authors/" in (ROOT / ".gitignore").read_text().splitlines()

