"""The shared engine: batches, augmentation, schedules, exact resume, the train command."""

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ugpcl.config import load_config
from ugpcl.device import processor_name
from ugpcl.engine.augment import augment_batch
from ugpcl.engine.sampler import TwoStreamSampler
from ugpcl.engine.step import poly_lr
from ugpcl.engine.trainer import Trainer
from ugpcl.geometry import rot90, rotation_theta, warp
from ugpcl.errors import UserError

NO_AUG = {"crop_scale": [1.0, 1.0], "rot90_flip_p": 0.0, "rotate_p": 0.0, "rotate_deg": 20, "hflip_p": 0.0,
          "color_jitter_p": 0.0, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1,
          "interpolation": "nearest"}


def test_two_stream_batches_are_labeled_then_unlabeled_and_cover_each_epoch():
    labeled, unlabeled = np.arange(10), np.arange(10, 40)
    s = TwoStreamSampler(labeled, unlabeled, batch_size=6, labeled_bs=4, seed=3)
    firsts = [s.next() for _ in range(2)]  # one labeled epoch = 10 // 4 = 2 batches (2 left over, dropped)
    seen = np.concatenate([lab for lab, _ in firsts])
    assert len(set(seen)) == 8 and set(seen) <= set(labeled)
    assert all(set(unl) <= set(unlabeled) and len(unl) == 2 for _, unl in firsts)


def test_sampler_resumes_from_its_state():
    make = lambda: TwoStreamSampler(np.arange(7), np.arange(7, 30), 5, 3, seed=1)  # noqa: E731
    a = make()
    straight = [a.next() for _ in range(9)]
    b = make()
    [b.next() for _ in range(4)]
    c = make()
    c.load_state_dict(b.state_dict())
    resumed = [c.next() for _ in range(5)]
    for (l1, u1), (l2, u2) in zip(straight[4:], resumed):
        assert (l1 == l2).all() and (u1 == u2).all()


def test_sampler_refuses_too_few_labeled_images():
    with pytest.raises(UserError, match="labeled"):
        TwoStreamSampler(np.arange(3), np.arange(3, 20), 8, 4, seed=0)


def test_augmentation_off_is_identity_and_labels_stay_in_label_set():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 32, 32)
    y = torch.randint(0, 4, (2, 32, 32))
    ax, ay = augment_batch(x, y, NO_AUG)
    assert torch.allclose(ax, x, atol=1e-5) and torch.equal(ay, y)
    full = {**NO_AUG, "crop_scale": [0.7, 1.0], "rotate_p": 1.0, "hflip_p": 0.5, "color_jitter_p": 1.0}
    ax, ay = augment_batch(x, y, full)
    assert ax.shape == x.shape and ay.shape == y.shape
    assert set(ay.unique().tolist()) <= {0, 1, 2, 3}
    assert 0 <= ax.min() and ax.max() <= 1


def test_nearest_augmentation_resamples_images_like_labels():
    """augment.interpolation nearest (both codes' order 0): images keep their values and are
    sampled where the labels are; bilinear blends neighbouring values."""
    torch.manual_seed(1)
    y = torch.randint(0, 4, (4, 32, 32))
    x = y[:, None].float() / 3
    warped = {**NO_AUG, "crop_scale": [0.7, 0.9], "rotate_p": 1.0, "hflip_p": 0.5}
    ax, ay = augment_batch(x, y, warped)
    assert torch.equal((ax[:, 0] * 3).round().long(), ay) and set((ax * 3).round().unique().tolist()) <= {0, 1, 2, 3}
    torch.manual_seed(1)
    bx, _ = augment_batch(x, y, {**warped, "interpolation": "bilinear"})
    assert not set((bx * 3).unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_small_turns_only_where_no_quarter_turn_was_drawn():
    """rot90_flip_p, else rotate_p (SSL4MIS's and the authors' RandomGenerator `elif`): at 0.5 / 0.5
    half the images get a quarter turn, a quarter a small turn, none both."""
    from ugpcl.engine.augment import geometric_theta

    torch.manual_seed(0)
    theta = geometric_theta(20000, {**NO_AUG, "rot90_flip_p": 0.5, "rotate_p": 0.5}, "cpu")
    degrees = torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 0, 0]))
    off_quarter = (degrees - 90 * torch.round(degrees / 90)).abs()
    small, square = off_quarter > 1e-3, (degrees.round() % 360 != 0) & (off_quarter <= 1e-3)
    assert not (small & (degrees.abs() > 20.001)).any()  # a small turn is never added to a quarter turn
    assert small.float().mean().item() == pytest.approx(0.25, abs=0.015)
    assert square.float().mean().item() == pytest.approx(0.5 * 3 / 4, abs=0.015)  # k = 1, 2, 3 of the half turned


def test_quarter_turn_warp_equals_exact_rot90():
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16)
    y = x[:, 0].long()
    k = torch.tensor([1, 3])
    wx, wy = warp(x, y, rotation_theta(torch.zeros(2), k))
    assert torch.allclose(wx, rot90(x, k), atol=1e-3)
    assert torch.equal(wy, rot90(y, k))


def test_poly_lr_starts_at_lr_and_decays_to_the_floor():
    tr = {"iterations": 100, "lr": 0.01, "min_lr": 0.001, "poly_power": 0.9}
    assert poly_lr(0, tr) == pytest.approx(0.01)
    assert poly_lr(50, tr) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(99, tr) == pytest.approx(0.001)


def tiny_overrides(iterations=8, **train) -> list[str]:
    return [f"train.iterations={iterations}", "train.val_every=4", "train.checkpoint_every=100",
            "methods.ugpcl.contrast_start=2", "methods.ugpcl.memory_size=8", "train.batch_size=4",
            "train.labeled_bs=2"] + [f"train.{k}={v}" for k, v in train.items()]


def tiny_cfg(iterations=8, **train):
    return load_config(profile="demo", overrides=tiny_overrides(iterations, **train))


INFO = {"run_id": "tiny_ugpcl", "method": "ugpcl", "dataset": "acdc", "regime": "tiny", "seed": 1337,
        "profile": "demo", "overrides": {}}


def test_resume_gives_the_same_parameters_as_training_straight_through(tiny_acdc, tmp_path):
    cfg = tiny_cfg(iterations=8)
    straight = Trainer(cfg, INFO, tmp_path / "a", data=tiny_acdc)
    assert straight.fit(progress=False)

    first = Trainer(cfg, INFO, tmp_path / "b", data=tiny_acdc)
    assert not first.fit(stop_after=4, progress=False)
    second = Trainer(cfg, INFO, tmp_path / "b", data=tiny_acdc)
    assert second.fit(progress=False)

    a = straight.method.state_dict()
    b = second.method.state_dict()
    assert a.keys() == b.keys() and "queue.queue" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    logged = [json.loads(line)["t"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(8))
    record = second.facts()  # run.json's: what the same seed's result depends on
    assert record["device_name"] == processor_name() and record["torch"] == torch.__version__


def test_the_processor_is_named_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 9654 96-Core Processor\n")
    assert processor_name(cpuinfo) == "AMD EPYC 9654 96-Core Processor"
    assert processor_name(tmp_path / "missing")  # elsewhere: platform's guess or "unknown", never empty


def test_a_resume_point_is_read_onto_the_cpu(tiny_acdc, tmp_path, monkeypatch):
    """torch.set_rng_state takes CPU byte tensors only: read onto a GPU, the saved RNG states would
    make every resume on CUDA fail. Parameters and optimiser state move to the device on loading."""
    from ugpcl.engine import checkpoint

    Trainer(tiny_cfg(iterations=8), INFO, tmp_path, data=tiny_acdc).fit(stop_after=4, progress=False)
    read, where = checkpoint.read, []
    monkeypatch.setattr(checkpoint, "read", lambda path, **kw: where.append(kw.get("map_location")) or read(path, **kw))
    assert Trainer(tiny_cfg(iterations=8), INFO, tmp_path, data=tiny_acdc).resume() == 4
    assert where == ["cpu"]


def test_the_gpu_generator_is_restored_onto_the_gpu_the_resumed_run_has(monkeypatch):
    """A resumed run may be given another GPU (the least busy one): its own generator's state goes
    with it, whatever the index."""
    from ugpcl.engine import checkpoint

    saved, restored = torch.tensor([7], dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: saved if str(device) == "cuda:1" else None)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, str(device))))
    state = checkpoint.rng_state(torch.device("cuda:1"))
    assert state["cuda"] is saved and "cuda" not in checkpoint.rng_state("cpu")
    checkpoint.set_rng_state(state, torch.device("cuda:0"))
    assert restored == [(saved, "cuda:0")]
    checkpoint.set_rng_state(state, "cpu")  # a CPU run ignores it
    assert len(restored) == 1


def test_resuming_after_the_method_file_changed_says_so(tiny_acdc, tmp_path, capsys):
    """A method author fixes a slip after a failure and reruns: the run resumes (its configuration is the
    same), and says that the iterations before its resume point ran the old code."""
    from ugpcl.engine import checkpoint

    Trainer(tiny_cfg(iterations=8), INFO, tmp_path, data=tiny_acdc).fit(stop_after=2, progress=False)
    assert Trainer(tiny_cfg(iterations=8), INFO, tmp_path, data=tiny_acdc).resume() == 2
    assert "has changed" not in capsys.readouterr().err   # the same code: nothing to say
    resume = tmp_path / "progress" / "resume.pt"
    ckpt = checkpoint.read(resume)
    checkpoint.save(resume, {**{k: v for k, v in ckpt.items() if k != "format"}, "method_code": "0" * 64})
    assert Trainer(tiny_cfg(iterations=8), INFO, tmp_path, data=tiny_acdc).resume() == 2
    said = capsys.readouterr().err
    assert "ugpcl.py has changed since this run's resume point (iteration 2) was saved: its first 2 " \
           "iterations ran the old code" in said and "--fresh" in said


def test_a_run_trained_again_from_the_start_drops_the_curves_the_replaced_run_published(tiny_acdc, tmp_path):
    """--force, or Snakemake after a settings change (which deletes the declared outputs, not dvclive/):
    a retrain that fails must not leave the replaced run's logs and DVCLive folder as if they were its own."""
    from ugpcl.engine.runfiles import RunFiles

    cfg = tiny_cfg(iterations=4)
    Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    published = [tmp_path / "log.jsonl", tmp_path / "val.jsonl", tmp_path / "dvclive"]
    assert all(p.exists() for p in published)
    RunFiles(tmp_path).discard()   # as `ugpcl train --force` does
    assert not Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(stop_after=2, progress=False)
    assert not any(p.exists() for p in published) and (tmp_path / "progress" / "log.jsonl").is_file()
    theirs = tmp_path / "own" / "dvclive" / "metrics.json"   # an --out that holds a DVCLive folder of the user's
    theirs.parent.mkdir(parents=True)
    theirs.write_text("{}")
    assert RunFiles(tmp_path / "own").drop_published() == [] and theirs.is_file()


def test_resume_refuses_a_run_dir_with_another_configuration(tiny_acdc, tmp_path):
    Trainer(tiny_cfg(iterations=8), INFO, tmp_path, data=tiny_acdc).fit(stop_after=2, progress=False)
    with pytest.raises(UserError, match=r"different configuration \(train.iterations: 8 in it, 9 now\)"):
        Trainer(tiny_cfg(iterations=9), INFO, tmp_path, data=tiny_acdc).resume()
    # what this run does not train with changes without retraining it (Snakemake, DVC): it resumes
    elsewhere = ["experiments.table1.paired_with=mt", "methods.cps.consistency=0.2", "data.isic.split=[8, 2]"]
    cfg = load_config(profile="demo", overrides=[*tiny_overrides(8), *elsewhere])
    assert Trainer(cfg, INFO, tmp_path, data=tiny_acdc).resume() == 2
    with pytest.raises(UserError, match=r"methods.ugpcl.temperature: 0.07 in it, 0.2 now"):  # its own method: not
        Trainer(load_config(profile="demo", overrides=[*tiny_overrides(8), "methods.ugpcl.temperature=0.2"]),
                INFO, tmp_path, data=tiny_acdc).resume()


def test_paper_profile_refuses_cpu_training_unless_allowed(tiny_acdc, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = load_config(profile="paper")
    with pytest.raises(UserError, match="allow_cpu"):
        Trainer(cfg, INFO, tmp_path, data=tiny_acdc)


class _Payload:
    """Pickles into a call of os.system: what a hostile .pt file would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    from ugpcl.engine.checkpoint import read

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "ugpcl-checkpoint-2", "state": _Payload(marker)}, path)
    with pytest.raises(UserError, match="refused") as err:
        read(path)
    assert not marker.exists() and str(path) in str(err.value)


@pytest.mark.parametrize("content, kind", [(b"\x89PNG\r\n\x1a\n" + bytes(64), "it is a PNG image"), (b"", "empty"),
                                           (b"hello world", "begins with the bytes b'hell'")])
def test_a_file_that_is_no_pytorch_file_is_not_called_unsafe(tmp_path, content, kind):
    from ugpcl.engine.checkpoint import read

    path = tmp_path / "case00.png"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a checkpoint file") as err:
        read(path)
    assert kind in str(err.value) and "refused" not in str(err.value) and str(path) in str(err.value)
    assert "--checkpoint" in err.value.fix


def test_checkpoints_of_the_old_format_ask_for_a_retrain(tmp_path):
    from ugpcl.engine.checkpoint import read

    path = tmp_path / "old.pt"
    torch.save({"format": "ugpcl-checkpoint-1", "nets": {}, "cfg": {}}, path)
    with pytest.raises(UserError, match="older ugpcl.*retrain"):
        read(path)
    torch.save({"format": "ugpcl-checkpoint-1", "rng": {"numpy": np.random.get_state()}}, path)
    with pytest.raises(UserError, match="refused.*format 1"):
        read(path)


def test_a_compute_loss_that_returns_a_bare_tensor_is_named_with_the_fix():
    """A method author's slip (README, 'Adding your own method'): not `(loss, terms)`."""
    from ugpcl.engine.step import make_optimizer, train_step
    from ugpcl.methods import build_method
    from ugpcl.methods.base import Batch

    cfg = load_config(profile="demo")
    method = build_method(cfg, "supervised", 4, 1)
    image = torch.rand(4, 1, 64, 64)
    batch = Batch(image, torch.zeros(2, 64, 64, dtype=torch.long), 2)
    optimizer = make_optimizer(method, cfg["train"])
    loss, terms = train_step(method, optimizer, batch, 0)       # the method as written: fine
    assert loss.ndim == 0 and "sup" in terms
    inner = method.compute_loss
    slips = [  # (what the method returns instead, what the error says of it, what its fix says)
        (lambda b, t: inner(b, t)[0], "returned Tensor, not (loss tensor, dict", "return self.semi_supervised"),
        (lambda b, t: (inner(b, t)[0].item(), inner(b, t)[1]), "returned (float, dict), not", "no .item() or float()"),
        (lambda b, t: (F.cross_entropy(method.model(b.image[:2]), b.label, reduction="none"), {}),
         "returned a loss of shape [2, 64, 64], not a single number", "`.mean()`"),
        (lambda b, t: (inner(b, t)[0].detach(), {}), "returned a loss with no gradient", "torch.no_grad()"),
    ]
    source = Path(inspect.getsourcefile(type(method)))
    for slip, says, fix in slips:
        method.compute_loss = slip
        with pytest.raises(UserError, match=re.escape(says)) as err:
            train_step(method, optimizer, batch, 1)
        assert err.value.path == source and fix in err.value.fix  # the method's file, not a torch traceback
        assert re.search(r"Supervised\.compute_loss \(line \d+\) returned", str(err.value))
    # the step looks nothing up unless something is wrong: a method file saved half-edited while runs of it
    # train (which inspect would fail to tokenise) cannot break them
    import ugpcl.engine.step as step

    method.compute_loss = inner
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step, "method_source", lambda m: 1 / 0)
        train_step(method, optimizer, batch, 2)
    # an inherited compute_loss is named where it is written: UA-MT's is MeanTeacher's, in mt.py
    path, line, name = step.method_source(build_method(cfg, "uamt", 4, 1))
    assert (path.name, name) == ("mt.py", "MeanTeacher.compute_loss")
    assert path.read_text().splitlines()[line - 1].lstrip().startswith("def compute_loss")
    labeled_only = Batch(image[:2], batch.label, 2)   # what a method that says it uses no unlabeled images gets
    with pytest.raises(UserError, match="reads batch.unlabeled, but this batch has no unlabeled images") as err:
        labeled_only.unlabeled
    assert "uses_unlabeled = False" in str(err.value)
