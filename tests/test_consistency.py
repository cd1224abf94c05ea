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
from ugpcl.errors import UserError
from ugpcl.study import Run

SIZE = 32


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


# --- a key set to no effect ---------------------------------------------------------------------
def test_weights_without_pretrained_is_a_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(config_checks, "_warned", set())
    load_config(profile="demo", overrides=[f"model.weights={tmp_path / 'x.pth'}", "model.pretrained=false"])
    load_config(profile="demo", overrides=[f"model.weights={tmp_path / 'x.pth'}", "model.pretrained=false"])
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1   # once per process
    assert "model.weights is set" in lines[0] and str(tmp_path / "x.pth") in lines[0]
    assert "model.pretrained is false, so it is not used" in lines[0] and "model.pretrained=true" in lines[0]
    load_config(profile="demo", overrides=["model.pretrained=false"])
    assert warnings_in(capsys.readouterr().err) == []
