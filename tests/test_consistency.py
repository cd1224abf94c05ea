"""Commands act on the data and settings the run they are given was made with, or say why not:
evaluation and training refuse another dataset's file, evaluation refuses a prepared file that
changed since training (and warns where --data names one), `summary.json` records the file
scored, `train` names the settings a finished run differs in, predict says what it converted,
a failed command leaves no empty output folder, and a key without effect is a warning."""

import json
import shutil

import cv2
import h5py
import numpy as np
import pytest
import yaml
from test_engine import INFO, tiny_cfg
from test_evaluation import make_acdc, run_cli, save_run

from ugpcl import config_checks
from ugpcl.commands import evaluate as evaluate_command, predict as predict_command, train as train_command
from ugpcl.config import load_config
from ugpcl.data.provenance import file_sha256
from ugpcl.engine.trainer import Trainer
from ugpcl.errors import UserError, warn_once
from ugpcl.study import Run

SIZE = 32


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


# --- evaluation and training on the run's own data ----------------------------------------------
def trained_run(tmp_path):
    """A run directory of the demo profile whose run.json records the data it was trained on, that
    file being the profile's prepared ACDC file (results/demo/data/acdc.h5, the default of --data)."""
    results = tmp_path / "results"
    run_dir = tmp_path / "run"
    save_run(run_dir, 4, 1, SIZE, overrides=[f"paths.results={results}"])
    default = results / "demo" / "data" / "acdc.h5"
    default.parent.mkdir(parents=True)
    (tmp_path / "first").mkdir()
    shutil.copy(make_acdc(tmp_path / "first", shapes=((2, 64, 96),), size=SIZE).path, default)
    record = json.loads((run_dir / "run.json").read_text())
    record["data"] = {"path": str(default), "sha256": file_sha256(default)}
    (run_dir / "run.json").write_text(json.dumps(record))
    return run_dir, default


def test_evaluation_refuses_a_default_file_prepared_again_and_warns_for_an_explicit_one(tmp_path, capsys):
    run_dir, default = trained_run(tmp_path)
    trained = file_sha256(default)
    evaluate = ["evaluate", "--run-dir", str(run_dir), "--device", "cpu"]
    assert run_cli(evaluate_command, evaluate) == 0
    first = run_dir / "evaluations" / "best-volume" / "summary.json"
    summary = json.loads(first.read_text())
    assert (summary["data"], summary["data_sha256"], summary["n_cases"]) == (str(default.resolve()), trained, 1)
    assert warnings_in(capsys.readouterr().err) == []

    (tmp_path / "second").mkdir()   # `ugpcl prepare` again, from another source: more cases
    shutil.copy(make_acdc(tmp_path / "second", shapes=((2, 64, 96), (3, 64, 96)), size=SIZE).path, default)
    now = file_sha256(default)
    with pytest.raises(UserError, match="the prepared file changed since the run was trained on it") as err:
        run_cli(evaluate_command, evaluate)
    message = str(err.value)
    assert str(default) in message and trained[:12] in message and now[:12] in message
    assert "--force" in message and f"--data {default}" in message
    assert json.loads(first.read_text()) == summary   # the earlier evaluation is not overwritten

    assert run_cli(evaluate_command, [*evaluate, "--data", str(default), "--out", str(tmp_path / "ev")]) == 0
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1 and str(default) in lines[0] and trained[:12] in lines[0] and now[:12] in lines[0]
    again = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert (again["data_sha256"], again["n_cases"]) == (now, 2)


def test_evaluation_and_training_refuse_a_file_of_another_dataset(tmp_path, tiny_acdc):
    save_run(tmp_path / "run", 4, 1, SIZE, dataset="isic")   # classes and channels happen to agree
    prepared = make_acdc(tmp_path, shapes=((2, 64, 96),), size=SIZE)
    out = tmp_path / "ev"
    with pytest.raises(UserError, match="the run was trained on the dataset 'isic', but this file holds the "
                                        "prepared 'acdc' dataset") as err:
        run_cli(evaluate_command, ["evaluate", "--run-dir", str(tmp_path / "run"), "--data", str(prepared.path),
                                   "--device", "cpu", "--out", str(out)])
    assert str(prepared.path) in str(err.value) and "ugpcl prepare isic" in str(err.value)
    assert not out.exists()
    with pytest.raises(UserError, match="the run trains the dataset 'isic', but this file holds the prepared "
                                        "'acdc' dataset") as err:
        Trainer(tiny_cfg(), {**INFO, "dataset": "isic"}, tmp_path / "train", data=tiny_acdc)
    assert str(tiny_acdc) in str(err.value) and "--dataset acdc" in str(err.value)
    assert not (tmp_path / "train").exists()


# --- a finished run trained with other settings -------------------------------------------------
def test_train_names_the_settings_a_finished_run_differs_in(tmp_path):
    base = ["--profile", "demo", "--set", f"paths.results={tmp_path / 'res'}"]
    cfg = load_config(profile="demo", overrides=[f"paths.results={tmp_path / 'res'}"])
    run, seed = Run("acdc", "136", "ugpcl"), cfg["train"]["seed"]
    run_dir = run.run_dir(cfg, seed)
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "finished"}))
    trained = load_config(profile="demo", overrides=[f"paths.results={tmp_path / 'res'}", "train.iterations=40",
                                                     "methods.ugpcl.temperature=0.5"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(run.config(trained, seed), sort_keys=False))
    with pytest.raises(UserError, match="already holds a finished run, trained with other settings") as err:
        run_cli(train_command, ["train", *base, "--run", "acdc136_ugpcl", "--no-progress"])
    message = str(err.value)
    assert str(run_dir) in message and "--force" in message
    assert f"train.iterations: 40 in the finished run, {cfg['train']['iterations']} now" in message
    assert f"methods.ugpcl.temperature: 0.5 in the finished run, {cfg['methods']['ugpcl']['temperature']!r} now" \
        in message
    # the settings it was trained with: nothing to retrain, as before
    assert run_cli(train_command, ["train", *base, "--set", "train.iterations=40", "--set",
                                   "methods.ugpcl.temperature=0.5", "--run", "acdc136_ugpcl"]) == 0


def test_train_names_a_finished_run_trained_on_a_prepared_file_made_again_since(tmp_path):
    """New masks, `ugpcl prepare` again: `ugpcl train` of a finished run no longer says there is
    nothing to do (the report leaves that run out, `ugpcl evaluate` refuses it)."""
    import hashlib

    from ugpcl.config import prepared_path

    base = ["--profile", "demo", "--set", f"paths.results={tmp_path / 'res'}"]
    cfg = load_config(profile="demo", overrides=[f"paths.results={tmp_path / 'res'}"])
    run, seed = Run("acdc", "136", "ugpcl"), cfg["train"]["seed"]
    run_dir, data = run.run_dir(cfg, seed), prepared_path(cfg, "acdc")
    run_dir.mkdir(parents=True)
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_bytes(b"prepared with the old masks")
    record = {"status": "finished", "data": {"sha256": hashlib.sha256(data.read_bytes()).hexdigest()}}
    (run_dir / "run.json").write_text(json.dumps(record))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(run.config(cfg, seed), sort_keys=False))
    assert run_cli(train_command, ["train", *base, "--run", "acdc136_ugpcl"]) == 0  # the same file: nothing to do
    data.write_bytes(b"prepared with the new masks")
    with pytest.raises(UserError, match="already holds a finished run, trained on another version of") as err:
        run_cli(train_command, ["train", *base, "--run", "acdc136_ugpcl"])
    assert str(run_dir) in str(err.value) and str(data) in str(err.value) and "--force" in str(err.value)


def test_settings_changes_name_params_keys_and_stop_at_five_in_the_message(tmp_path):
    from ugpcl.study import settings_changes

    cfg = load_config(profile="demo")
    run = Run("acdc", "136", "ugpcl")
    other = load_config(profile="demo", overrides=["data.acdc.interpolation=bilinear", "data.image_size=96",
                                                   "methods.cps.consistency=0.2", "paths.results=/elsewhere"])
    changes = settings_changes(cfg, other, run, 1)
    assert [key for key, _, _ in changes] == ["data.acdc.interpolation", "data.image_size"]  # not cps, not paths
    older = run.config(cfg, 1)
    del older["methods"]["ugpcl"]["temperature"]   # a key an older version did not write
    assert [(k, repr(a), b) for k, a, b in settings_changes(older, cfg, run, 1)] == [
        ("methods.ugpcl.temperature", "(not set)", cfg["methods"]["ugpcl"]["temperature"])]
    many = load_config(profile="demo", overrides=[f"train.{k}={v}" for k, v in
                                                  (("iterations", 7), ("lr", 0.5), ("min_lr", 0.1), ("val_every", 3),
                                                   ("log_every", 3), ("checkpoint_every", 3))])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(run.config(many, 1)))
    with pytest.raises(UserError) as err:
        train_command.refuse_other_settings(run_dir, run.config(cfg, 1), run, 1)
    assert str(err.value).count(" in the finished run, ") == 5 and "; ...)" in str(err.value)


# --- predict says what it converted -------------------------------------------------------------
def test_predict_warns_once_per_kind_of_channel_conversion(tmp_path, capsys):
    from test_predict import blocky, threshold_net

    from ugpcl.predict import predict_files

    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / f"{name}.jpg"), np.repeat(blocky((SIZE, SIZE))[..., None] * 200, 3, 2).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "grey.png"), (blocky((SIZE, SIZE)) * 200).astype(np.uint8))
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["image"] = blocky((2, SIZE, SIZE)).astype(np.float32)
    predict_files(threshold_net(1), [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "grey.png"], tmp_path / "o1", SIZE)
    assert warnings_in(capsys.readouterr().err) == ["warning: RGB images converted to grey for a 1-channel network"]
    predict_files(threshold_net(3), [tmp_path / "grey.png", tmp_path / "v.h5", tmp_path / "a.jpg"], tmp_path / "o2", SIZE)
    assert warnings_in(capsys.readouterr().err) == [
        "warning: grey images replicated to 3 channels for a 3-channel network",
        "warning: grey HDF5 volumes replicated to 3 channels for a 3-channel network"]


# --- no empty output folder after a failure -----------------------------------------------------
def test_failed_predict_and_evaluate_leave_no_output_folder_they_made(tmp_path):
    run_dir = tmp_path / "run"
    save_run(run_dir, 2, 1, SIZE)   # a 2-class network: the 4-class ACDC file does not fit it
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), np.zeros((16, 16), np.uint8))
    acdc = make_acdc(tmp_path, shapes=((2, 64, 96),), size=SIZE).path
    old = tmp_path / "old.h5"
    shutil.copy(acdc, old)
    with h5py.File(old, "r+") as f:
        f.attrs["format_version"] = 1
    existing = tmp_path / "existing"
    existing.mkdir()
    evaluate = ["evaluate", "--run-dir", str(run_dir), "--device", "cpu"]
    for data, match in ((acdc, "trained on 2 classes, this data has 4"), (old, "prepare it again")):
        for out in (tmp_path / "ev" / "x", existing):
            with pytest.raises(UserError, match=match):
                run_cli(evaluate_command, [*evaluate, "--data", str(data), "--out", str(out)])
    with pytest.raises(UserError, match="trained on 2 classes"):
        run_cli(evaluate_command, [*evaluate, "--data", str(acdc)])   # the default folder, in the run dir
    best = run_dir / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    for out in (tmp_path / "p8", existing):
        with pytest.raises(UserError, match="cannot read checkpoint"):
            run_cli(predict_command, ["predict", "--run-dir", str(run_dir), str(image), "--out", str(out),
                                      "--device", "cpu"])
    assert not (tmp_path / "ev").exists() and not (tmp_path / "p8").exists()
    assert not (run_dir / "evaluations").exists()
    assert existing.is_dir() and not any(existing.iterdir())   # an existing folder stays


# --- a key set to no effect ---------------------------------------------------------------------
def test_weights_without_pretrained_is_a_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(config_checks, "_warn", warn_once())
    load_config(profile="demo", overrides=[f"model.weights={tmp_path / 'x.pth'}", "model.pretrained=false"])
    load_config(profile="demo", overrides=[f"model.weights={tmp_path / 'x.pth'}", "model.pretrained=false"])
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1   # once per process
    assert "model.weights is set" in lines[0] and str(tmp_path / "x.pth") in lines[0]
    assert "model.pretrained is false, so it is not used" in lines[0] and "model.pretrained=true" in lines[0]
    load_config(profile="demo", overrides=["model.pretrained=false"])
    assert warnings_in(capsys.readouterr().err) == []


def test_evaluation_of_a_run_whose_prepared_file_is_gone_names_the_command_that_writes_it(tmp_path, capsys):
    run_dir, default = trained_run(tmp_path)
    default.unlink()
    with pytest.raises(UserError, match="prepared data file not found") as err:
        run_cli(evaluate_command, ["evaluate", "--run-dir", str(run_dir), "--device", "cpu"])
    assert "`ugpcl prepare acdc --profile demo`" in str(err.value) and str(default) in str(err.value)


def test_evaluation_by_slices_says_it_scored_batches(tmp_path, capsys):
    run_dir, _ = trained_run(tmp_path)
    assert run_cli(evaluate_command, ["evaluate", "--run-dir", str(run_dir), "--device", "cpu",
                                      "--protocol", "slices"]) == 0
    assert "batches of slices, mean Dice" in capsys.readouterr().out
