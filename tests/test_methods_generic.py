"""What every registered method must do, run over the registry: a method is covered the moment
its module exists in src/ugpcl/methods/. Plus the proof: a new method file, written into a copy
of the package, trains, resumes and evaluates through the `ugpcl` command with no other edit."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ugpcl.config import load_config
from ugpcl.device import processor_name
from ugpcl.errors import UserError
from ugpcl.engine.step import make_optimizer, train_step
from ugpcl.engine.trainer import Trainer
from ugpcl.evaluation import evaluate_run
from ugpcl.methods import build_method, hparams, registry
from ugpcl.methods.base import Batch, Method

REPO = Path(__file__).resolve().parents[1]
METHODS = list(registry())
CLASSES = 4


def fast_cfg(*overrides: str) -> dict:
    """The demo profile with every unsupervised term at full weight from the first iterations."""
    cfg = load_config(profile="demo", overrides=list(overrides))
    for name, cls in registry().items():
        keys = {f.name for f in hparams.fields(cls.HParams)}
        section = cfg["methods"].setdefault(name, {})
        section.update({k: 1 for k in ("ramp_epoch", "ramp_length") if k in keys})
        section.update({k: "code" for k in ("ramp_schedule",) if k in keys})
        section.update({k: 0 for k in ("gate_iterations", "contrast_start") if k in keys})
    return cfg


def batch_for(method: Method, batch: Batch) -> Batch:
    """What the engine hands a method: labeled images only when it does not use unlabeled data."""
    return batch if method.uses_unlabeled else Batch(batch.labeled, batch.label, batch.labeled_bs)


def check_starts_as_the_baselines(name: str, cfg: dict) -> None:
    """At one seed every method's network starts from the supervised baseline's weights (on the
    parameters they share), so a table compares methods, not initial draws: a second network built
    before the main one (or the main one built twice) would shift the draw."""
    torch.manual_seed(0)
    reference = build_method(cfg, "supervised", CLASSES, 1).model.state_dict()
    torch.manual_seed(0)
    weights = build_method(cfg, name, CLASSES, 1).model.state_dict()
    shared = [k for k in reference if k in weights and weights[k].shape == reference[k].shape]
    assert len(shared) == len(reference), f"{name}'s network lacks parameters of the shared UNet"
    differ = [k for k in shared if not torch.equal(weights[k], reference[k])]
    assert not differ, f"{name} starts from other weights than the supervised baseline at the same seed: {differ[:3]}"


@pytest.mark.parametrize("name", METHODS)
def test_every_method_starts_from_the_baselines_weights(name):
    check_starts_as_the_baselines(name, load_config(profile="demo"))


def check_trains(name: str, batch: Batch, cfg: dict) -> None:
    torch.manual_seed(0)
    method = build_method(cfg, name, CLASSES, batch.image.shape[1])
    assert method.name == name
    optimizer = make_optimizer(method, {**cfg["train"], "lr": 0.02})
    method.train()
    losses = []
    for t in range(20):
        loss, terms = train_step(method, optimizer, batch_for(method, batch), t)
        assert math.isfinite(loss.item()) and all(math.isfinite(float(v)) for v in terms.values()), terms
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    net = method.eval_network().eval()
    with torch.no_grad():
        assert net(batch.image).shape == (len(batch.image), CLASSES, *batch.image.shape[2:])
    assert all(any(getattr(method, n) is m for m in method.children()) for n in method.evaluated)


def check_resumes_and_evaluates(name: str, cfg: dict, data, tmp_path: Path) -> None:
    """k steps, stop, resume, k more == 2k straight, bit for bit (networks, teachers, queues); then evaluate.
    The ramp of the run schedule (default) puts the full consistency weight in the log's last row."""
    cfg = {**cfg, "train": {**cfg["train"], "iterations": 4, "val_every": 2, "checkpoint_every": 100}}
    section = cfg["methods"][name]
    if "ramp_schedule" in section:
        cfg = {**cfg, "methods": {**cfg["methods"], name: {**section, "ramp_schedule": "run", "ramp_length": 200}}}
    info = {"run_id": f"tiny_{name}", "method": name, "dataset": "acdc", "regime": "tiny", "seed": 1337,
            "profile": "demo", "overrides": {}}
    straight = Trainer(cfg, info, tmp_path / "a", data=data)
    assert straight.fit(progress=False)
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    if "ramp_schedule" in section:
        assert log[0]["weight"] < log[-1]["weight"] == cfg["methods"][name]["consistency"], log
    assert not Trainer(cfg, info, tmp_path / "b", data=data).fit(stop_after=2, progress=False)
    resumed = Trainer(cfg, info, tmp_path / "b", data=data)
    assert resumed.fit(progress=False)
    a, b = straight.method.state_dict(), resumed.method.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    summary = evaluate_run(tmp_path / "b", checkpoint="last", data=data)
    assert summary["method"] == name and summary["n_cases"] == 8 and 0 <= summary["dice"] <= 1
    assert list(summary["networks"]) == list(resumed.method.evaluated)  # CPS: both networks scored
    assert (tmp_path / "b" / "eval-last" / "summary.json").is_file()


@pytest.mark.parametrize("name", METHODS)
def test_method_trains_on_real_slices(name, acdc_batch):
    check_trains(name, acdc_batch, fast_cfg())


@pytest.mark.parametrize("name", METHODS)
def test_method_resumes_exactly_and_evaluates(name, tiny_acdc, tmp_path):
    check_resumes_and_evaluates(name, fast_cfg(), tiny_acdc, tmp_path)


def test_every_method_declares_sourced_typed_hyperparameters_matching_params_yaml():
    cfg = load_config(profile="paper")
    for name, cls in registry().items():
        for f in hparams.fields(cls.HParams):
            assert f.metadata.get("source"), f"{name}.{f.name} has no source for its default"
        assert hparams.defaults(cls.HParams) == cfg["methods"][name], f"params.yaml methods.{name} != its defaults"
    for path in {Path(sys.modules[cls.__module__].__file__) for cls in registry().values()}:
        assert len(path.read_text().splitlines()) < 120, f"{path.name} should stay under 120 lines"


# --- a new method is one file --------------------------------------------------------------------
def readme_example() -> tuple[str, str]:
    """The method file and its params.yaml section, as the README shows them."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Adding your own method", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    params = re.search(r"```yaml\n(.*?)```", section, re.S)[1]
    return code, params


def test_readme_example_method_registers_trains_resumes_and_evaluates(acdc_batch, tiny_acdc, tmp_path):
    code, params = readme_example()
    from ugpcl.methods import base

    module = types.ModuleType("ugpcl.methods.readme_example")
    module.__package__ = "ugpcl.methods"
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, "README.md", "exec"), module.__dict__)
        name = next(n for n, c in base._REGISTRY.items() if c.__module__ == "ugpcl.methods.readme_example")
        cfg = fast_cfg()
        cfg["methods"].update(yaml.safe_load(params)["methods"])
        check_starts_as_the_baselines(name, cfg)
        check_trains(name, acdc_batch, cfg)
        check_resumes_and_evaluates(name, cfg, tiny_acdc, tmp_path)
    finally:
        for n, c in list(base._REGISTRY.items()):
            if c.__module__ == module.__name__:
                del base._REGISTRY[n]
        del sys.modules[module.__name__]


def test_new_method_file_runs_through_the_cli_with_no_other_edit(tiny_acdc, tmp_path):
    """Copy the package, add methods/<name>.py and its params.yaml section: train (stopped and
    resumed), evaluate, bench, all through `python -m ugpcl.cli`."""
    code, params = readme_example()
    shutil.copytree(REPO / "src" / "ugpcl", tmp_path / "src" / "ugpcl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "workflow" / "schemas", tmp_path / "workflow" / "schemas")
    shutil.copytree(REPO / "workflow" / "resources", tmp_path / "workflow" / "resources")
    name = next(iter(yaml.safe_load(params)["methods"]))
    (tmp_path / "src" / "ugpcl" / "methods" / f"{name}.py").write_text(code)
    cfg = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg["methods"].update(yaml.safe_load(params)["methods"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}

    printed = {}

    def ugpcl(*args):
        out = subprocess.run([sys.executable, "-m", "ugpcl.cli", *args], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        printed["stderr"] = out.stderr
        return out.stdout

    common = ["--config", str(tmp_path / "params.yaml"), "--profile", "demo", "--set", "train.iterations=4",
              "--set", "train.val_every=2"]
    run = ["train", *common, "--method", name, "--dataset", "acdc", "--regime", "tiny", "--data", str(tiny_acdc),
           "--out", str(tmp_path / "run"), "--no-progress"]
    assert "stopped after 2" in ugpcl(*run, "--stop-after", "2")
    finished = ugpcl(*run)  # the Dice in % as the progress line and `evaluate` print it, both checkpoints named
    assert re.search(r"finished \S+: mean Dice \d+\.\d\d% \(best checkpoint; best \d+\.\d\d%, last \d+\.\d\d%; \d+ s",
                     finished), finished
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["method"] == name and record["overrides"] == {}   # the matrix's overrides: none for an ad-hoc run
    assert record["set"] == ["train.iterations=4", "train.val_every=2"]   # and the command's own --set options
    ugpcl("evaluate", "--run-dir", str(tmp_path / "run"), "--data", str(tiny_acdc), "--out", str(tmp_path / "ev"))
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["method"] == name
    bench = json.loads(ugpcl("bench", *common, "--method", name, "--steps", "1", "--warmup", "0", "--device", "cpu"))
    assert bench["method"] == name and bench["median_step_s"] > 0
    assert bench["device"].startswith(processor_name() + " (")  # the processor, as tools/authors_bench.py says it
    # stdout is the JSON; a person reads one line on stderr
    assert re.fullmatch(rf"{name}: median step {bench['median_step_s']:.4g} s \(10-90%: \S+-\S+ s\), "
                        rf"{bench['images_per_s']:.1f} images/s, peak memory \d+ MiB, evaluation \S+ ms/image; "
                        rf"batch \d+ x 64 px on {re.escape(bench['device'])}, torch \S+",
                        printed["stderr"].strip().splitlines()[-1]), printed["stderr"]
    # In Table 1 (README): one more run per setting of the matrix, nothing else to edit
    table1 = cfg["experiments"]["table1"]["methods"]
    runs = ugpcl("runs", *common, "--set", f"experiments.table1.methods=[{', '.join([*table1, name])}]")
    assert f"acdc136_{name} " in runs and f"isic91_{name} " in runs
    settings = sum(len(regimes) for regimes in cfg["experiments"]["table1"]["datasets"].values())

    def count(out):
        return int(re.search(r"(\d+) distinct runs", out)[1])

    assert count(runs) == count(ugpcl("runs", *common)) + settings


def test_a_method_file_without_register_is_named_with_the_fix(tmp_path):
    """The usual slip: methods/<name>.py and its params.yaml section, but no @register."""
    code, params = readme_example()
    assert "@register\n" in code
    shutil.copytree(REPO / "src" / "ugpcl", tmp_path / "src" / "ugpcl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "workflow" / "schemas", tmp_path / "workflow" / "schemas")
    name = next(iter(yaml.safe_load(params)["methods"]))
    (tmp_path / "src" / "ugpcl" / "methods" / f"{name}.py").write_text(code.replace("@register\n", ""))
    cfg = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg["methods"].update(yaml.safe_load(params)["methods"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    def ugpcl(*args):
        return subprocess.run([sys.executable, "-m", "ugpcl.cli", *args], capture_output=True, text=True, cwd=tmp_path,
                              timeout=300, env={**os.environ, "PYTHONPATH": str(tmp_path / "src")})

    out = ugpcl("runs", "--config", str(tmp_path / "params.yaml"), "--profile", "demo")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert f"methods.{name}: no such method" in out.stderr
    assert f"methods/{name}.py registers no method called '{name}'" in out.stderr and "@register" in out.stderr
    # --method NAME is checked as the arguments are parsed: the same fix, not argparse's bare "invalid choice"
    out = ugpcl("train", "--method", name, "--dataset", "acdc", "--regime", "136")
    assert out.returncode == 2 and f"argument --method: '{name}' is not a registered method (registered: " in out.stderr
    assert f"methods/{name}.py registers no method called '{name}'" in out.stderr


@pytest.mark.parametrize("source, says", [
    ("import numpy\n\nx = numpy.not_there\n", "at line 3: AttributeError"),
    ("def f(:\n    pass\n", "at line 1: SyntaxError"),
    ("import os\nfrom ugpcl.methods import _half_helper\n", "at line 2: SyntaxError"),  # the helper's own line 3
    ("from dataclasses import dataclass\n\n\n@dataclass\nclass HParams:\n    a: int = 1\n    b: float\n",
     "TypeError: non-default argument 'b' follows default argument"),  # a hyper-parameter without a default
], ids=["raises", "syntax", "helper", "no-default"])
def test_a_method_module_that_fails_to_import_is_named_with_its_line(tmp_path, monkeypatch, capsys, source, says):
    """A method being written that does not import stops every command: with the file and line, not a traceback."""
    import ugpcl.methods as methods

    (tmp_path / "halfway.py").write_text(source)
    (tmp_path / "_half_helper.py").write_text("x = 1\n\ndef g(:\n")
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(tmp_path)])
    with pytest.raises(UserError, match=re.escape(says)) as err:
        methods.registry()
    assert err.value.path == tmp_path / "halfway.py" and "python -c 'import ugpcl.methods.halfway'" in err.value.fix
    assert ("every hyper-parameter needs a default" in err.value.fix) == ("non-default" in says)
    assert "ugpcl.methods.halfway" not in sys.modules
    # through the command line: --method is checked against the registry while the arguments are parsed
    from ugpcl.cli import main

    capsys.readouterr()
    assert main(["bench", "--method", "mt", "--steps", "1"]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith(f"error: {tmp_path / 'halfway.py'}: the method module failed")
    assert "Traceback" not in printed
