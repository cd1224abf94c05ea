"""Bad input that used to end in a traceback or slip through: each case a clear UserError naming the
file (or the keys) and the fix, with nothing partial left behind. Disk full and read-only folders
are real (a small or read-only tmpfs in a private mount namespace) where `unshare` allows it, and
simulated with a writer that runs out of space everywhere."""

import errno
import json
import math
import os
import re
import shutil
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest
import torch
from data_helpers import config, folder_state
from test_engine import INFO, tiny_cfg
from test_evaluation import make_acdc, run_cli, save_run
from test_recovery import assert_same_run, straight_run  # noqa: F401 (a fixture)

from ugpcl import fileio
from ugpcl.cli import main
from ugpcl.commands import data as data_command, evaluate as evaluate_command, predict as predict_command
from ugpcl.commands import train as train_command
from ugpcl.config import DEFAULT_CONFIG, flat_keys, load_config, parse_override
from ugpcl.data import stage
from ugpcl.data.download import download
from ugpcl.data.prepared import load_prepared
from ugpcl.engine.checkpoint import load_checkpoint_file
from ugpcl.engine.jsonlog import JsonLog
from ugpcl.engine.trainer import Trainer
from ugpcl.errors import UserError
from ugpcl.evaluation import evaluate_run
from ugpcl.methods import hparams, registry
from ugpcl.study import load_study

PY = [sys.executable, "-m", "ugpcl.cli"]


# --- a file system that is full or read-only ----------------------------------------------------
def _can_confine() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || "
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


CONFINE = _can_confine()
needs_confinement = pytest.mark.skipif(not CONFINE, reason="no unprivileged mount namespace (unshare -Urm) here")


def confined(folder, commands: list[list[str]], *, size="1m", readonly=False):
    """Run `commands` one after the other with a fresh tmpfs of `size` on `folder` (a private mount
    namespace): returns [(exit status, output)] and the files left in the tmpfs at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    script = ['mount -t tmpfs -o "size=$1${2:+,ro}" tmpfs "$0" || exit 99']
    for i, cmd in enumerate(commands):
        script.append(" ".join(f"'{c}'" for c in cmd) + f' > "$3/out{i}" 2>&1; echo $? > "$3/rc{i}"')
    script.append('find "$0" -mindepth 1 | sort > "$3/left"')
    logs = folder.parent / f"{folder.name}-logs"
    logs.mkdir()
    subprocess.run(["unshare", "-Urm", "sh", "-c", "\n".join(script), str(folder), size, "ro" if readonly else "",
                    str(logs)], check=True, timeout=900)
    results = [(int((logs / f"rc{i}").read_text()), (logs / f"out{i}").read_text()) for i in range(len(commands))]
    return results, (logs / "left").read_text().split()


def out_of_space(after: int = 1, match: str = ""):
    """An `open` for ugpcl.fileio whose files (those named with `match`) fill the disk: from their
    `after`-th write on, half the data goes in, then ENOSPC."""
    real_open = open

    class Full:
        def __init__(self, file):
            self.file, self.writes = file, 0

        def write(self, data):
            self.writes += 1
            if self.writes >= after:
                self.file.write(data[: len(data) // 2])
                self.file.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.file.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def __getattr__(self, name):
            return getattr(self.file, name)

    def fake_open(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        return Full(file) if ("w" in mode or "a" in mode) and match in str(path) else file

    return fake_open


@pytest.fixture
def run_and_image(tmp_path):
    """A run directory with a tiny 32 px ACDC network, and a grey PNG to segment."""
    run_dir = tmp_path / "run"
    save_run(run_dir, num_classes=4, in_channels=1, image_size=32)
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), np.zeros((16, 16), np.uint8))
    return run_dir, image


def train_args(data, out, *extra) -> list[str]:
    """`ugpcl train` arguments of a supervised demo run on the tiny ACDC file."""
    return ["train", "--profile", "demo", "--method", "supervised", "--dataset", "acdc", "--regime", "tiny",
            "--data", str(data), "--out", str(out), "--no-progress", *extra]


def demo_prepare_cfg(tmp_path):
    return config(f"paths.raw={tmp_path / 'raw'}", profile="demo")


@needs_confinement
def test_disk_full_in_prepare_is_a_clear_error_leaving_nothing(tmp_path):
    full = tmp_path / "full"
    prepare = [*PY, "prepare", "acdc", "--profile", "demo", "--set", f"paths.raw={tmp_path / 'raw'}",
               "--out", f"{full}/data/acdc.h5"]
    [(code, out)], left = confined(full, [prepare], size="600k")
    assert code == 2 and "no space left on the device" in out and "Traceback" not in out, out
    assert f"{full}/data/acdc.h5" in out and left == []  # not even the folder it made


@needs_confinement
def test_disk_full_in_training_is_a_clear_error_leaving_nothing(tiny_acdc, tmp_path):
    full = tmp_path / "full"
    train = [*PY, *train_args(tiny_acdc, f"{full}/run", "--set", "train.iterations=8", "--set", "train.val_every=4",
                              "--set", "train.checkpoint_every=4")]
    [(code, out)], left = confined(full, [train], size="1m")
    assert code == 2 and "no space left on the device" in out and "Traceback" not in out, out
    assert f"{full}/run/progress/best-4.pt" in out and left == [], "a run dir without a resume point is removed"


@needs_confinement
def test_read_only_output_folders_are_clear_errors(tiny_acdc, tmp_path, run_and_image):
    run_dir, image = run_and_image
    ro = tmp_path / "ro"
    commands = [[*PY, "predict", "--run-dir", str(run_dir), str(image), "--out", f"{ro}/masks", "--device", "cpu"],
                [*PY, *train_args(tiny_acdc, f"{ro}/run")]]
    results, left = confined(ro, commands, readonly=True)
    for (code, out), where in zip(results, ("masks", "run")):
        assert code == 2 and "cannot write here" in out and f"{ro}/{where}" in out and "Traceback" not in out, out
    assert left == []


def test_disk_full_while_writing_the_prepared_file_keeps_the_earlier_one(tmp_path, monkeypatch):
    out = tmp_path / "data" / "acdc.h5"
    out.parent.mkdir()
    out.write_bytes(b"an earlier prepared file")
    before = folder_state(out.parent)
    monkeypatch.setattr(fileio, "open", out_of_space(match=".acdc.h5."), raising=False)
    with pytest.raises(UserError, match="no space left on the device") as err:
        stage.prepare(demo_prepare_cfg(tmp_path), "acdc", out)
    assert str(out) in str(err.value) and folder_state(out.parent) == before


def test_disk_full_at_a_resume_point_then_rerun_gives_the_uninterrupted_result(tiny_acdc, straight_run, tmp_path,
                                                                               monkeypatch):
    cfg = tiny_cfg(iterations=8, checkpoint_every=4, val_every=2)
    with monkeypatch.context() as patch:
        patch.setattr(fileio, "open", out_of_space(match=".resume.pt."), raising=False)
        with pytest.raises(UserError, match="no space left on the device") as err:
            Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    assert str(tmp_path / "progress" / "resume.pt") in str(err.value)
    assert not list(tmp_path.rglob(".resume.pt.*")), "no partial checkpoint"
    assert Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    assert_same_run(tmp_path, straight_run)


def test_disk_full_in_the_log_then_rerun_drops_the_partial_line(tiny_acdc, straight_run, tmp_path, monkeypatch,
                                                                capsys):
    cfg = tiny_cfg(iterations=8, checkpoint_every=4, val_every=2)
    assert not Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(stop_after=4, progress=False)
    original = JsonLog.__init__

    def filling(self, path, start):
        original(self, path, start)
        if self.path.name == "log.jsonl":
            self.file = out_of_space(after=3)(self.path, "a")  # the third row is cut short

    with monkeypatch.context() as patch:
        patch.setattr(JsonLog, "__init__", filling)
        with pytest.raises(UserError, match="no space left on the device") as err:
            Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    assert str(tmp_path / "progress" / "log.jsonl") in str(err.value)
    assert Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    assert "dropped a partial last line" in capsys.readouterr().err
    assert_same_run(tmp_path, straight_run)


# --- output paths -----------------------------------------------------------------------------
def test_out_under_a_file_is_a_clear_error_for_every_command(tmp_path, tiny_acdc, run_and_image):
    run_dir, image = run_and_image
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    calls = [
        (predict_command, ["predict", "--run-dir", str(run_dir), str(image), "--out", str(blocker), "--device", "cpu"]),
        (evaluate_command, ["evaluate", "--run-dir", str(run_dir), "--out", str(blocker / "eval"), "--device", "cpu"]),
        (train_command, train_args(tiny_acdc, blocker / "run")),
        (data_command, ["prepare", "acdc", "--profile", "demo", "--out", str(blocker / "acdc.h5")]),
    ]
    for module, argv in calls:
        with pytest.raises(UserError, match="is a file, not a folder") as err:
            run_cli(module, argv)
        assert str(blocker) in str(err.value), argv[0]
    assert blocker.read_text() == "mine"


def test_an_error_listing_others_keeps_each_fix_apart():
    inner = UserError("truncated PNG", path="a.png", fix="replace the file")
    assert str(inner) == "a.png: truncated PNG. Fix: replace the file" and inner.problem == "a.png: truncated PNG"
    outer = UserError("1 input failed:\n  " + str(inner), fix="correct it")
    assert str(outer).splitlines() == ["1 input failed:", "  a.png: truncated PNG. Fix: replace the file",
                                       "Fix: correct it"]
    assert str(UserError("Not an image.", path="b.png", fix="remove it")) == "b.png: Not an image. Fix: remove it"


# --- configuration ----------------------------------------------------------------------------------
def test_a_bad_yaml_value_in_set_is_a_clear_error():
    result = subprocess.run([*PY, "choices", "--set", "train.augment.crop_scale=[0.8, 1.0"], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--set train.augment.crop_scale=[0.8, 1.0: the value" in result.stderr and "not valid YAML" in result.stderr


def test_a_mistyped_key_in_set_names_the_override_and_the_closest_key_not_params_yaml():
    with pytest.raises(UserError, match="invalid configuration") as err:
        load_config(profile="demo", overrides=["train.iterations=8", "data.acdc.sourse=local"])
    text = str(err.value)
    assert "--set data.acdc.sourse=local: data.acdc:" in text and "did you mean data.acdc.source?" in text
    assert "Fix: write --set data.acdc.source=local" in text
    assert err.value.path is None and "params.yaml" not in text.split("Fix:")[0]



FOLDER_ENTRY = ("\n  mydata:\n    kind: folder\n    images: data/mine\n    image_pattern: '{id}.png'\n"
                "    mask_pattern: '{id}_mask.png'\n    seed: 0\n    regimes: {\"4\": 4}\n")


@pytest.mark.parametrize("entry, says, takes", [
    ("    classes: {0: background, 255: lesion}\n    split: 0.7\n",
     "data.mydata.split: 0.7 is not valid under any of the given schemas",
     "data.mydata.split is the split: train : validation as two whole numbers, e.g. [7, 3], or {train: FILE, "
     "val: FILE}"),
    ("    classes: {background: 0, lesion: 255}\n    split: [7, 3]\n",
     "data.mydata.classes: 'background' does not match",
     "data.mydata.classes is a map of mask value -> class name, at least two, e.g. {0: background, 255: "
     "lesion}"),
], ids=["split", "classes"])
def test_a_wrong_folder_dataset_value_says_what_the_key_is(tmp_path, entry, says, takes):
    """Schema errors for a folder dataset's split and classes said only "not valid under any of the
    given schemas"; the fix now quotes the schema's description of the key, with an example."""
    bad = tmp_path / "params.yaml"
    bad.write_text(DEFAULT_CONFIG.read_text().replace("\ndata:\n", "\ndata:\n" + FOLDER_ENTRY[1:] + entry, 1))
    with pytest.raises(UserError, match=re.escape(says)) as err:
        load_config(bad)
    assert err.value.path == bad and takes in err.value.fix
    assert "quote the value" not in err.value.fix   # name: value swapped is not a number to quote


@pytest.mark.parametrize("override, says", [
    ("methods.mt.consistensy=0.2", "unknown hyper-parameter of mt (did you mean consistency?)"),
    ("methods.mt.consistency=-1", "-1 is less than the minimum of 0"),
    ("methods.mt.gate_iterations=-1", "-1 is less than the minimum of 0"),  # a key the demo profile sets too
    ("methods.mt={consistency: 0.1}", "methods.mt.ramp_epoch: missing"),
    ("methods.fo.x=1", "methods.fo: no such method"),
    ("methods.mtt.ema_decay=0.9", "methods.mtt: no such method (did you mean mt?)"),
])
def test_a_wrong_method_hyper_parameter_in_set_names_the_override_not_params_yaml(override, says):
    with pytest.raises(UserError, match=re.escape(says)) as err:
        load_study(profile="demo", overrides=["train.iterations=8", override])
    assert str(err.value).startswith(f"--set {override}: ") and err.value.path is None
    assert "params.yaml" not in str(err.value)


def test_a_wrong_method_hyper_parameter_in_params_yaml_still_names_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(DEFAULT_CONFIG.read_text().replace("\n    ema_decay: 0.99", "\n    ema_decai: 0.99", 1))
    with pytest.raises(UserError, match="ema_decai: unknown hyper-parameter") as err:
        load_study(bad, profile="demo", overrides=["methods.mt.consistency=0.2"])
    assert err.value.path == bad

def demo_profile_with(tmp_path, old: str, new: str):
    """A copy of params.yaml whose demo profile has `old` replaced by `new`."""
    text = DEFAULT_CONFIG.read_text()
    start = text.index("\nprofiles:\n")
    bad = tmp_path / "params.yaml"
    bad.write_text(text[:start] + text[start:].replace(old, new, 1))
    assert bad.read_text() != text
    return bad


TYPOS_IN_THE_DEMO_PROFILE = [
    ("      mt: {gate_iterations: 20}", "      mt: {gate_iterations: 20, consistecy: 0.2}",
     "profiles.demo.methods.mt.consistecy: unknown hyper-parameter of mt (did you mean consistency?)",
     "remove or rename it; mt takes consistency,"),
    ("      iterations: 120", "      iteratons: 120",
     "profiles.demo.train: Additional properties are not allowed ('iteratons' was unexpected) (did you mean "
     "profiles.demo.train.iterations?)", "rename profiles.demo.train.iteratons to profiles.demo.train.iterations"),
    ("      lr: 0.03", "      lr: -0.03", "profiles.demo.train.lr: -0.03 is less than or equal to the minimum of 0",
     "profiles.demo.train.lr is the SGD learning rate"),
    ("    methods:\n      ugpcl:", "    experiments:\n      table1: {methods: [supervised, mt]}\n    methods:\n      ugpcl:",
     "profiles.demo.experiments.table1.paired_with is 'ugpcl', which is not one of "
     "profiles.demo.experiments.table1.methods (supervised, mt)",   # not the top-level key: the paper's comparison
     "set profiles.demo.experiments.table1.paired_with to one of supervised, mt"),
]


@pytest.mark.parametrize("old, new, says, fix", TYPOS_IN_THE_DEMO_PROFILE,
                         ids=["method", "schema-key", "value", "paired-with"])
def test_a_mistake_in_the_profile_in_force_names_the_key_where_the_profile_writes_it(tmp_path, old, new, says, fix):
    """`methods.mt.consistecy` sent the user to `methods: mt:`, which has no such key: it is written
    under `profiles: demo: methods: mt:`."""
    bad = demo_profile_with(tmp_path, old, new)
    with pytest.raises(UserError) as err:
        load_study(bad, profile="demo")
    assert err.value.path == bad and says in err.value.message and fix in err.value.fix, str(err.value)


@pytest.mark.parametrize("old, new, says, fix", TYPOS_IN_THE_DEMO_PROFILE,
                         ids=["method", "schema-key", "value", "paired-with"])
def test_a_mistake_in_a_profile_not_in_force_is_an_error_now_not_when_it_is_chosen(tmp_path, capsys, old, new, says,
                                                                                  fix):
    bad = demo_profile_with(tmp_path, old, new)
    assert main(["runs", "--config", str(bad)]) == 2  # params.yaml's profile: paper
    text = capsys.readouterr().err
    assert f"{bad}: " in text and "in the profile demo, not the one in force" in text, text
    assert says in text and fix in text and "Traceback" not in text


def test_a_workflow_job_leaves_other_profiles_to_its_workflow(tmp_path, monkeypatch):
    """A profile edited (and broken) while a study of another one runs must not stop that study's later
    jobs: the workflow checked every profile when it started; a job checks the one it runs."""
    from ugpcl import lifetime

    bad = demo_profile_with(tmp_path, *TYPOS_IN_THE_DEMO_PROFILE[0][:2])
    with pytest.raises(UserError, match="in the profile demo, not the one in force"):
        load_study(bad, profile="paper")
    monkeypatch.setenv(lifetime.ENV, lifetime.token())   # the workflow process itself: it checks them all
    with pytest.raises(UserError, match="in the profile demo, not the one in force"):
        load_study(bad, profile="paper")
    monkeypatch.setenv(lifetime.ENV, lifetime.token(os.getppid()))   # one of its jobs
    assert lifetime.workflow_job() and load_study(bad, profile="paper")["profile"] == "paper"
    with pytest.raises(UserError, match="profiles.demo.methods.mt.consistecy"):   # the profile it runs: checked
        load_study(bad, profile="demo")


def test_a_table2_row_of_a_profile_is_named_where_the_profile_writes_it(tmp_path):
    bad = demo_profile_with(tmp_path, "    methods:\n      ugpcl:", "    experiments:\n      table2: {rows: [{row: 1, "
                            "method: ugpcl, overrides: {contrast: all}}]}\n    methods:\n      ugpcl:")
    with pytest.raises(UserError, match=re.escape("profiles.demo.experiments.table2.rows[0] (row 1).overrides."
                                                  "contrast: 'all' is not one of")):
        load_study(bad, profile="demo")


def test_a_profile_not_in_force_is_not_blamed_for_the_base_or_for_what_set_settles(tmp_path):
    """An unused profile is checked for the keys its section writes: a base that --set completes for
    this command (data.acdc.local_dir), or that the profile in force replaces, is no error of another."""
    text = DEFAULT_CONFIG.read_text()
    bad = tmp_path / "params.yaml"
    bad.write_text(text.replace("    source: official ", "    source: local ", 1).replace("  lr: 0.01", "  lr: -1", 1))
    assert bad.read_text().count("    source: local ") == 1 and "  lr: -1" in bad.read_text()
    assert load_study(bad, profile="demo")["train"]["lr"] == 0.03  # the paper profile keeps the base's lr -1
    cfg = load_study(bad, profile="paper", overrides=["train.lr=0.01", f"data.acdc.local_dir={tmp_path}"])
    assert cfg["data"]["acdc"]["source"] == "local"  # the demo profile writes a source of its own


def test_a_profile_that_is_not_a_mapping_is_named(tmp_path):
    bad = demo_profile_with(tmp_path, "  paper: {}", "  paper: [train]")
    with pytest.raises(UserError, match=r"profiles\.paper must be a mapping of the keys it overrides, not list"):
        load_config(bad, profile="demo")


def test_a_mistake_in_params_yaml_still_names_the_file_beside_one_in_set(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(DEFAULT_CONFIG.read_text().replace("\n  poly_power:", "\n  poly_pwer:", 1))
    with pytest.raises(UserError) as err:
        load_config(bad, profile="demo", overrides=["trian.lr=0.1"])
    assert err.value.path == bad
    assert "--set trian.lr=0.1: (top level)" in str(err.value) and "write --set train.lr=0.1" in str(err.value)
    assert "rename train.poly_pwer to train.poly_power" in str(err.value)


@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("5E-4", 0.0005), ("-2e+1", -20.0), ("1.5e2", 150.0),
                                         ("[1e-1, 2]", [0.1, 2]), ("'1e-3'", "1e-3"), ("1e", "1e"), ("e5", "e5")])
def test_set_reads_scientific_notation_as_a_number(text, value):
    assert parse_override(f"train.lr={text}") == (["train", "lr"], value)


def test_set_lr_in_scientific_notation_is_accepted():
    assert load_config(profile="demo", overrides=["train.lr=1e-3"])["train"]["lr"] == 0.001


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@pytest.mark.parametrize("bad, read", [(".nan", "nan"), ("-.inf", "-inf")])
def test_not_a_number_or_infinity_is_refused_for_every_number_of_the_configuration(bad, read):
    """`--set train.lr=.nan` passed `exclusiveMinimum: 0` (NaN compares false) and trained on NaN; an
    infinity passed every key without a maximum. No key takes either: each names the key and the fix."""
    cfg = load_config(profile="demo")
    numbers = {key: value for key, value in flat_keys({k: v for k, v in cfg.items() if k != "methods"}).items()
               if _number(value) or isinstance(value, list) and value and all(map(_number, value))}
    assert {"train.lr", "train.iterations", "model.blocks", "data.acdc.regimes.68"} <= numbers.keys()
    for key, value in numbers.items():
        text = f"[{bad}, {', '.join(map(str, value[1:]))}]" if isinstance(value, list) else bad
        with pytest.raises(UserError) as err:
            load_config(profile="demo", overrides=[f"{key}={text}"])
        said = f"--set {key}={text}: {key}{'.0' if isinstance(value, list) else ''}: {read} is not a finite number"
        assert said in str(err.value) and "YAML reads .nan as not-a-number" in err.value.fix, str(err.value)
        assert str(err.value).count("\n  ") == 1, "one line, not one more for each bound"


def test_not_a_number_or_infinity_is_refused_for_every_method_hyper_parameter():
    checked = 0
    for method, registered in registry().items():
        cls = registered.HParams
        for name, value in hparams.defaults(cls).items():
            if not (_number(value) or isinstance(value, list) and all(map(_number, value))):
                continue
            for bad in (math.nan, math.inf):
                section = {**hparams.defaults(cls), name: [*value[:-1], bad] if isinstance(value, list) else bad}
                says = f"methods.{method}.{name}: {bad} is not a finite number"
                with pytest.raises(UserError, match=re.escape(says)):
                    hparams.parse(cls, section, method)
            checked += 1
    assert checked >= 40  # every number of the eight methods


@pytest.mark.parametrize("override, says", [
    ("paths.results=.inf", "paths.results: inf is not of type 'string'"),
    ("methods.ugpcl.contrast=.nan", "methods.ugpcl.contrast: nan is not one of ['none', 'sup', 'pseudo', 'ugpcl']"),
])
def test_not_a_number_for_a_text_key_is_a_value_of_the_wrong_type_not_a_number_that_is_not_finite(override, says):
    with pytest.raises(UserError, match=re.escape(says)) as err:
        load_study(profile="demo", overrides=[override])
    assert "finite" not in str(err.value)


def test_set_not_a_number_for_a_hyper_parameter_names_the_override_and_trains_nothing():
    """It trained, and the same command again was refused as "trained with other settings (nan in the
    finished run, nan now)": NaN differs from itself."""
    with pytest.raises(UserError) as err:
        load_study(profile="demo", overrides=["methods.mt.ema_decay=.nan"])
    said = ("--set methods.mt.ema_decay=.nan: methods.mt.ema_decay: nan is not a finite number. Fix: correct this "
            "override: give ema_decay a finite value")
    assert str(err.value).startswith(said), str(err.value)


@pytest.mark.parametrize("old, new, says, fix", [
    ("\n  momentum: 0.9", "\n\tmomentum: 0.9", "in `momentum: 0.9`", "YAML indents with spaces only"),
    ("\nprofile: paper", "\nprofile: paper\nx:\n\ty: 1", "in `y: 1`", "YAML indents with spaces"),
    ("\n  seed: 1337", '\n  seed: 1337\n  group: "^(patient\\d+)_"',
     'found unknown escape character, in `group: "^(patient\\d+)_"`', "write that value in single quotes"),
    ("\n  seed: 1337", '\n  seed: 1337\n  where: "D:\\x-rays"', "hexdecimal", "write that value in single quotes"),
], ids=["tab", "tab-first", "backslash", "windows-path"])
def test_a_yaml_slip_in_params_yaml_names_the_line_and_its_fix(tmp_path, old, new, says, fix):
    """A tab in the indentation, a regex in double quotes: the line itself and the fix, not "correct the
    YAML syntax" after PyYAML's `"<unicode string>", line 50`."""
    bad = tmp_path / "params.yaml"
    text = DEFAULT_CONFIG.read_text()
    bad.write_text(text.replace(old, new, 1))
    marker = "\t" if "\t" in new else "\\"
    line = next(i for i, x in enumerate(bad.read_text().splitlines(), 1) if marker in x)
    with pytest.raises(UserError, match=f"not valid YAML at line {line}, column ") as err:
        load_config(bad)
    assert err.value.path == bad and says in str(err.value) and err.value.fix.startswith(fix)


def test_scientific_notation_in_a_method_section_gets_the_spelling_yaml_1_1_reads(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(DEFAULT_CONFIG.read_text().replace("\n    temperature: 0.07", "\n    temperature: 7e-2", 1))
    with pytest.raises(UserError, match="methods.ugpcl.temperature: '7e-2' is not of type 'number'") as err:
        load_study(bad)
    assert err.value.path == bad and err.value.fix.startswith("write temperature: 7.0e-2 (YAML 1.1 reads 7e-2 as text")


def test_scientific_notation_in_params_yaml_is_refused_with_the_spelling_yaml_1_1_reads(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(DEFAULT_CONFIG.read_text().replace("\n  momentum: 0.9", "\n  momentum: 9e-1", 1))
    with pytest.raises(UserError, match="train.momentum: '9e-1' is not of type 'number'") as err:
        load_config(bad, profile="demo")
    assert err.value.path == bad and "write train.momentum as 9.0e-1" in err.value.fix


def test_the_key_a_wrong_value_is_for_is_cut_where_the_schema_reached_it():
    """A regime named `regimes` (the key's own name again) and a `multipleOf` error both get the key's
    description, with the key named once."""
    with pytest.raises(UserError) as err:
        load_config(overrides=["data.image_size=100"])
    assert "data.image_size is the side every image is resized to" in err.value.fix
    mine = ("data.my={kind: folder, images: x, image_pattern: '{id}.png', mask_pattern: '{id}_m.png', seed: 0, "
            "classes: {0: a, 1: b}, split: [7, 3], regimes: {regimes: 0}}")
    with pytest.raises(UserError, match="data.my.regimes.regimes: 0 is not valid") as err:
        load_config(overrides=[mine])
    assert "data.my.regimes is a map of regime name" in err.value.fix


def test_a_number_in_a_list_of_text_says_to_quote_the_lists_items(tmp_path):
    """A regime written 68 in experiments.table1.datasets: the fix said `0: "68"`, a key nobody writes."""
    with pytest.raises(UserError, match="experiments.table1.datasets.acdc.0: 68 is not of type 'string'") as err:
        load_config(overrides=['experiments.table1.datasets.acdc=[68, "136"]'])
    assert "quote the items so that they stay text: --set 'experiments.table1.datasets.acdc=[\"68\", ...]'" in \
        err.value.fix
    bad = tmp_path / "params.yaml"
    bad.write_text(DEFAULT_CONFIG.read_text().replace('acdc: ["68", "136"]', 'acdc: [68, "136"]', 1))
    with pytest.raises(UserError, match="experiments.table1.datasets.acdc.0") as err:
        load_config(bad)
    assert 'quote the items so that they stay text: acdc: ["68", ...]' in err.value.fix and err.value.path == bad


def test_a_number_in_set_where_text_is_expected_says_to_quote_it():
    with pytest.raises(UserError, match="4 is not of type 'string'") as err:
        load_config(profile="demo", overrides=["experiments.table2.regime=4"])
    assert "--set 'experiments.table2.regime=\"4\"'" in err.value.fix
    assert load_config(profile="demo", overrides=['experiments.table2.regime="4"'])["experiments"]["table2"][
        "regime"] == "4"


@pytest.mark.parametrize("overrides, keys", [
    (["train.labeled_bs=4"], ["train.labeled_bs (4)", "train.batch_size (4)"]),
    (["train.labeled_bs=5"], ["train.labeled_bs (5)", "train.batch_size (4)"]),
    (["train.min_lr=0.1"], ["train.min_lr (0.1)", "train.lr (0.03)"]),
    (["train.augment.crop_scale=[0.9, 0.5]"], ["train.augment.crop_scale [0.9, 0.5]"]),
    (["model.swin.heads=[5, 6, 12]"], ["model.swin.heads[0] = 5", "model.swin.embed_dim"]),
    (["model.pretrained=true"], ["model.pretrained", "model.width is 16"]),
    (["data.isic.source=local"], ["data.isic.local_dir"]),
    (['data.acdc.regimes={"68": 10}'], ["data.acdc.regimes['68'] = 10 patients", "data.demo.acdc_train_patients"]),
    (['data.isic.regimes={"91": 1}'], ["data.isic.regimes['91'] = 1 images", "train.labeled_bs = 2"]),
    (["data.demo.isic_images=8"], ["data.isic.regimes['181'] = 8 images", "data.demo.isic_images = 8"]),
    (["data.isic.split=[1, 100]"], ["data.isic.split [1, 100]", "0 training"]),
    (["train.deterministic=true", "train.speed.cudnn_benchmark=true"],
     ["train.deterministic is true", "train.speed.cudnn_benchmark is true"]),
])
def test_keys_that_contradict_each_other_are_refused_at_load_naming_them(overrides, keys):
    with pytest.raises(UserError, match="inconsistent configuration") as err:
        load_config(profile="demo", overrides=overrides)
    for key in keys:
        assert key in str(err.value)
    assert f"(with --set {', --set '.join(overrides)})" in str(err.value)  # where the values may come from


def test_labeled_batch_as_large_as_the_batch_no_longer_reaches_training(tiny_acdc, tmp_path):
    with pytest.raises(UserError, match=r"train.labeled_bs \(2\) must be smaller than train.batch_size \(2\)"):
        run_cli(train_command, train_args(tiny_acdc, tmp_path / "run", "--set", "train.batch_size=2"))
    assert not (tmp_path / "run").exists()


# --- checkpoints, run records, prepared files ---------------------------------------------------
@pytest.fixture
def checkpoint_file(tmp_path):
    save_run(tmp_path / "run", num_classes=4, in_channels=1, image_size=32)
    return tmp_path / "run" / "checkpoints" / "best.pt"


@pytest.mark.parametrize("tamper, message", [
    (lambda c: c["cfg"]["model"].update(width=8), "weights do not fit the network"),   # the demo's is 16
    (lambda c: c["info"].update(num_classes=3), "weights do not fit the network"),
    (lambda c: c["info"].update(method="mt"), "weights do not fit the network .*method 'mt'"),
    (lambda c: c["info"].update(method="nosuch"), "names no network this version can build"),
    (lambda c: c["cfg"].pop("model"), "incomplete or malformed"),
    (lambda c: c["info"].pop("num_classes"), "incomplete or malformed"),
])
def test_a_checkpoint_whose_configuration_does_not_match_its_weights(checkpoint_file, tamper, message):
    ckpt = torch.load(checkpoint_file, weights_only=True)
    tamper(ckpt)
    torch.save(ckpt, checkpoint_file)
    with pytest.raises(UserError, match=message) as err:
        load_checkpoint_file(checkpoint_file)
    assert str(checkpoint_file) in str(err.value) and "retrain" in str(err.value)
    assert str(err.value).count("Fix:") == 1   # an error quoted inside it keeps its own fix out


def test_a_method_being_written_is_not_blamed_on_a_good_checkpoint(checkpoint_file, tmp_path, monkeypatch):
    """evaluate/predict of a finished run while another method's module does not import: that module's
    error (fix it), not 'the file was altered: retrain the run' about a checkpoint that is fine."""
    import ugpcl.methods as methods

    (tmp_path / "halfway.py").write_text("def f(:\n")
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(tmp_path)])
    with pytest.raises(UserError, match="the method module failed to import at line 1") as err:
        load_checkpoint_file(checkpoint_file)
    assert err.value.path == tmp_path / "halfway.py" and "retrain" not in str(err.value)


def test_a_corrupt_run_json_is_an_error_naming_it(tmp_path, tiny_acdc):
    record = tmp_path / "run" / "run.json"
    record.parent.mkdir()
    record.write_text('{"status": "finis')
    with pytest.raises(UserError, match="not valid JSON") as err:
        run_cli(train_command, train_args(tiny_acdc, record.parent))
    assert str(record) in str(err.value) and "--force" in str(err.value)


def test_a_prepared_file_holding_label_7_is_an_error_before_training(tiny_acdc, tmp_path):
    bad = tmp_path / "acdc.h5"
    shutil.copy(tiny_acdc, bad)
    with h5py.File(bad, "r+") as f:
        labels = f["train/labels"][()]
        labels[0, 0, 0] = 7
        f["train/labels"][...] = labels
    with pytest.raises(UserError, match="train/labels hold the value 7, but the file declares 4 classes") as err:
        load_prepared(bad)
    assert str(bad) in str(err.value) and "ugpcl prepare acdc" in str(err.value)
    with pytest.raises(UserError, match="value 7"):
        Trainer(tiny_cfg(), INFO, tmp_path / "run", data=bad)


def test_evaluate_checks_the_image_size_against_the_checkpoint(tmp_path):
    save_run(tmp_path / "run", num_classes=4, in_channels=1, image_size=32)
    prepared = make_acdc(tmp_path, shapes=((2, 64, 96),), size=64)
    with pytest.raises(UserError, match="trained on 32 px images, this data has 64 px images") as err:
        evaluate_run(tmp_path / "run", data=prepared.path)
    assert str(prepared.path) in str(err.value) and not (tmp_path / "run" / "eval").exists()


def test_data_actually_used_is_recorded_not_the_configured_source(tiny_acdc, tmp_path):
    trainer = Trainer(tiny_cfg(iterations=4), INFO, tmp_path, data=tiny_acdc)
    assert trainer.cfg["data"]["acdc"]["source"] == "demo"
    facts = trainer.facts()
    assert facts["data_source"] == "test" == facts["data"]["source"]  # the file's own attribute
    assert facts["data"]["path"] == str(tiny_acdc.resolve())
    import hashlib

    assert facts["data"]["sha256"] == hashlib.sha256(tiny_acdc.read_bytes()).hexdigest()


def test_resume_on_other_data_is_refused(tiny_acdc, tmp_path):
    cfg = tiny_cfg(iterations=8)
    Trainer(cfg, INFO, tmp_path / "run", data=tiny_acdc).fit(stop_after=2, progress=False)
    other = tmp_path / "other.h5"
    shutil.copy(tiny_acdc, other)
    with h5py.File(other, "r+") as f:
        f.attrs["source"] = "changed"
    with pytest.raises(UserError, match="trained on other data"):
        Trainer(cfg, INFO, tmp_path / "run", data=other).fit(progress=False)


# --- predict and download -----------------------------------------------------------------------
def test_predict_writes_every_good_input_and_summarises_the_failed_ones(tmp_path):
    from test_predict import threshold_net

    from ugpcl import predict
    from ugpcl.predict import PredictionFailed, predict_files

    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((16, 16), 200, np.uint8))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:-20])
    volume = tmp_path / "vol.h5"
    with h5py.File(volume, "w") as f:
        f["image"] = np.zeros((2, 16, 16), np.float32)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(PredictionFailed, match="1 of 3 inputs failed") as err:
        predict_files(threshold_net(), [good, cut, volume], out, 32)
    assert str(cut) in str(err.value) and "truncated PNG" in str(err.value)
    lines = str(err.value).splitlines()   # the summary's own fix on a line of its own, not after the last input's
    assert lines[-1] == "Fix: correct or remove the failed inputs and predict them again"
    assert str(err.value).count("Fix:") == 1 and "(fix: " in str(err.value)  # each input's fix in parentheses
    written = ["good_mask.png", "good_overlay.png", "vol_overlay.png", "vol_pred.h5", "vol_pred.nii.gz"]
    assert sorted(p.name for p in err.value.written) == written
    assert sorted(p.name for p in out.iterdir()) == sorted([*written, "notes.txt", predict.MANIFEST])
    assert (out / "notes.txt").read_text() == "the user's"


def test_predict_refuses_to_replace_a_file_it_did_not_write_and_replaces_its_own(tmp_path):
    """A mask named as predict names its outputs (`<stem>_mask.png`, the README's own mask pattern)
    beside its image: predicting that image into the same folder is refused before any work, the
    mask left as it was; a folder of predict's own outputs is predicted into again."""
    from test_predict import threshold_net

    from ugpcl import predict

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "case0.png"), np.full((16, 16), 200, np.uint8))
    cv2.imwrite(str(images / "case1.png"), np.full((16, 16), 20, np.uint8))
    cv2.imwrite(str(images / "case1_mask.png"), np.full((16, 16), 255, np.uint8))  # the user's annotation
    before = folder_state(images)
    with pytest.raises(UserError, match="would replace case1_mask.png, which `ugpcl predict` did not write") as err:
        predict.predict_files(threshold_net(), [images / "case0.png", images / "case1.png"], images, 32)
    assert str(images / "case1_mask.png") in str(err.value) and "another --out folder" in str(err.value)
    assert folder_state(images) == before, "nothing written, the annotation untouched"
    out = tmp_path / "out"
    first = predict.predict_files(threshold_net(), [images / "case0.png"], out, 32)
    again = predict.predict_files(threshold_net(), [images / "case0.png", images / "case1.png"], out, 32)
    assert set(first) < set(again)
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in again] + [predict.MANIFEST])


def test_an_inputs_outputs_are_written_together_or_not_at_all(tmp_path, monkeypatch):
    from test_predict import threshold_net

    from ugpcl import predict

    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.full((16, 16), 200, np.uint8))
    real = predict.write_png

    def failing_overlay(tmp, array, target):
        if target.name.endswith("_overlay.png"):
            raise UserError("cannot write PNG", path=target)
        real(tmp, array, target)

    monkeypatch.setattr(predict, "write_png", failing_overlay)
    with pytest.raises(UserError, match="cannot write PNG"):
        predict.predict_files(threshold_net(), [image], tmp_path / "out", 32)
    assert list((tmp_path / "out").iterdir()) == [], "no mask without its overlay, no temporary file"


def test_a_wrong_checksum_archive_the_user_placed_is_moved_aside_not_deleted(tmp_path):
    import hashlib

    placed = tmp_path / "ISIC2018_Task1-2_Training_Input.zip"
    placed.write_bytes(b"an 11 GB archive, cut short")
    expected = hashlib.sha256(b"the real archive").hexdigest()
    actual = hashlib.sha256(placed.read_bytes()).hexdigest()
    with pytest.raises(UserError, match="SHA-256 mismatch") as err:
        download("http://127.0.0.1:9/unused", placed, sha256=expected)
    aside = tmp_path / f"{placed.name}.rejected-sha256-{actual[:12]}"
    assert f"moved aside to {aside}" in str(err.value)
    assert not placed.exists() and aside.read_bytes() == b"an 11 GB archive, cut short"
    assert sorted(p.name for p in tmp_path.iterdir()) == [aside.name]


def test_ctrl_c_outside_training_says_how_to_go_on(monkeypatch, capsys):
    """Ctrl-C during training names the iteration (engine.lifetime.Interrupted); anywhere else (an
    evaluation that ends a training, a report) the command still says what is kept and what to do."""
    from ugpcl import cli
    from ugpcl.commands import report

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "choices_command", interrupted)
    assert cli.main(["choices"]) == 130
    assert capsys.readouterr().err.strip() == ("interrupted: nothing half-written is kept (outputs are written whole "
                                               "or not at all); run the same command again to go on")
