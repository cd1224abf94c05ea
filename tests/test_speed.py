"""GPU speed switches and the synchronisation-free step, checked numerically on the CPU: each
switch gives the losses of the plain step, and no training step reads a value back to the host."""

import contextlib
import json
import re
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from ugpcl.config import deep_merge, load_config
from ugpcl.engine import determinism, speed
from ugpcl.engine.augment import augment_batch
from ugpcl.engine.step import make_optimizer, train_step
from ugpcl.engine.trainer import Trainer
from ugpcl.errors import UserError
from ugpcl.geometry import rot90
from ugpcl.methods import build_method, registry
from ugpcl.methods.base import Batch

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def demo_cfg(*overrides):
    return load_config(profile="demo", overrides=["methods.ugpcl.contrast_start=0", "methods.mt.gate_iterations=0",
                                                  *overrides])


def losses(name: str, switches: speed.Speed, batch: Batch, steps: int = 1, backend: str = "inductor",
           dtype=torch.float64):
    """The losses of `steps` training steps and the parameter updates. In float64 by default, so
    that a switch that changes only the order of sums shows differences of round-off size."""
    cfg = demo_cfg()
    torch.manual_seed(0)
    method = speed.apply(build_method(cfg, name, 4, 1).to(dtype), switches, backend=backend)
    batch = Batch(batch.image.to(dtype), batch.label, batch.labeled_bs)
    optimizer = make_optimizer(method, cfg["train"], fused=switches.fused_optimizer)
    method.train()
    before = {k: v.detach().clone() for k, v in method.named_parameters()}
    out = []
    for t in range(steps):
        torch.manual_seed(100 + t)
        b = Batch(speed.batch_layout(batch.image, switches), batch.label, batch.labeled_bs)
        loss, _ = train_step(method, optimizer, b if method.uses_unlabeled else Batch(b.labeled, b.label, 2), t)
        out.append(loss.item())
    return out, {k: v.detach() - before[k] for k, v in method.named_parameters()}


def assert_same(a, b):
    """Same losses, and the same update of the parameters up to float round-off (channels-last
    convolutions sum in another order; parameters with tiny gradients differ most, relatively)."""
    (loss_a, update_a), (loss_b, update_b) = a, b
    assert loss_a == pytest.approx(loss_b, rel=1e-9)
    flat_a, flat_b = (torch.cat([u[k].flatten() for k in sorted(u)]) for u in (update_a, update_b))
    assert ((flat_a - flat_b).norm() / flat_b.norm()).item() < 1e-8


@pytest.mark.parametrize("switch", [{"channels_last": True}, {"fused_optimizer": True}])
@pytest.mark.parametrize("name", ["ugpcl", "mt"])
def test_switch_gives_the_same_losses(name, switch, acdc_batch):
    """One step: later steps may legitimately part (argmax and anchor choices flip on round-off)."""
    assert_same(losses(name, speed.Speed(**switch), acdc_batch), losses(name, speed.Speed(), acdc_batch))


def test_fused_sgd_takes_a_parameter_whose_gradients_start_late(acdc_batch):
    """UGPCL's projection head gets its first gradient after contrast_start (0 here: at the second
    step), when the other parameters' momentum buffers exist: fused SGD (all buffers or none)
    failed there, and must update as SGD does."""
    fused = losses("ugpcl", speed.Speed(fused_optimizer=True), acdc_batch, steps=2)
    assert_same(fused, losses("ugpcl", speed.Speed(), acdc_batch, steps=2))


def test_compiled_blocks_keep_checkpoint_keys_and_losses(acdc_batch):
    """torch.compile traced through dynamo and autograd (aot_eager: no code generation on the CPU)."""
    assert_same(losses("ugpcl", speed.Speed(compile="default"), acdc_batch, backend="aot_eager"),
                losses("ugpcl", speed.Speed(), acdc_batch))
    method = speed.apply(build_method(demo_cfg(), "ugpcl", 4, 1), speed.Speed(compile="default"), backend="aot_eager")
    assert speed.compiled_blocks(method) == 4  # encoder, CNN decoder, Swin decoder, embedding head
    assert list(method.state_dict()) == list(build_method(demo_cfg(), "ugpcl", 4, 1).state_dict())


def test_compile_modes_are_the_schemas_and_none_uses_cuda_graphs():
    """CUDA graph trees break block-wise compilation in passes without gradients (speed.py)."""
    import yaml
    from torch._inductor import list_mode_options

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "params.schema.yaml").read_text())
    enum = schema["properties"]["train"]["properties"]["speed"]["properties"]["compile"]["enum"]
    assert [m for m in enum if m not in ("auto", False)] == list(speed.COMPILE_MODES)
    for mode in speed.COMPILE_MODES[2:]:
        assert not list_mode_options(mode).get("triton.cudagraphs"), mode


def test_auto_takes_the_measured_default_and_cudnn_is_cuda_only():
    auto = {"channels_last": "auto", "cudnn_benchmark": "auto", "fused_optimizer": "auto", "compile": "auto"}
    assert speed.resolve(auto, CPU) == speed.Speed(**speed.MEASURED["cpu"])
    assert speed.resolve(auto, torch.device("cuda")) == speed.Speed(**speed.MEASURED["cuda"])
    forced = speed.resolve({**auto, "cudnn_benchmark": True, "compile": False, "fused_optimizer": True}, CPU)
    assert forced == speed.Speed(fused_optimizer=True)


def test_per_sample_quarter_turns_equal_torch_rot90():
    x = torch.arange(5 * 2 * 6 * 6, dtype=torch.float32).view(5, 2, 6, 6)
    k = torch.tensor([0, 1, 2, 3, 1])
    out = rot90(x, k)
    for i in range(5):
        assert torch.equal(out[i], torch.rot90(x[i], int(k[i]), dims=(-2, -1)))
    with pytest.raises(ValueError, match="square"):
        rot90(torch.zeros(1, 1, 4, 6), torch.zeros(1))


# --- no host-device synchronisation in a step ---------------------------------------------------
READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "nonzero")


@contextlib.contextmanager
def reads_recorded(found: set):
    """Record every Tensor method that copies a value from a tensor to Python while active."""
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def spy(name):
        def wrapper(self, *args, **kwargs):
            found.add(name)
            return originals[name](self, *args, **kwargs)
        return wrapper

    for name in READS:
        setattr(torch.Tensor, name, spy(name))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


@pytest.mark.parametrize("name", list(registry()))
def test_training_step_reads_nothing_back_from_the_device(name, acdc_batch):
    """On a GPU each such read would make the host wait for the device (the CPU test sees the calls)."""
    torch.manual_seed(0)
    method = build_method(demo_cfg(), name, 4, 1)
    optimizer = make_optimizer(method, demo_cfg()["train"])
    batch = acdc_batch if method.uses_unlabeled else Batch(acdc_batch.labeled, acdc_batch.label, 2)
    found: set = set()
    for t in (5, 6):  # twice: the second step has a filled queue / an updated teacher
        with reads_recorded(found):
            train_step(method, optimizer, batch, t)
    assert found == set()


@pytest.mark.parametrize("name", list(registry()))
def test_training_step_has_a_deterministic_cuda_kernel_for_every_op(name, acdc_batch):
    """`train.deterministic` makes torch raise on a GPU at the first op without a deterministic
    kernel: no op of a full step (augmentation, forward, backward, optimiser, EMA, queues; every
    term on; both memory layouts) is one, and the step runs in that mode here."""
    cfg = demo_cfg()
    for layout in (speed.Speed(), speed.Speed(channels_last=True)):
        torch.manual_seed(0)
        method = speed.apply(build_method(cfg, name, 4, 1), layout)
        optimizer = make_optimizer(method, cfg["train"])
        augment = method.augmentation(cfg["train"]["augment"])
        n = acdc_batch.labeled_bs if not method.uses_unlabeled else len(acdc_batch.image)

        def steps():
            for t in (5, 6):  # twice: the second step has a filled queue / an updated teacher
                x, y = augment_batch(acdc_batch.image[:n], acdc_batch.label, augment)
                train_step(method, optimizer, Batch(speed.batch_layout(x, layout), y, acdc_batch.labeled_bs), t)

        with determinism.mode(True):
            assert determinism.audit(steps) == {}, layout


@pytest.mark.parametrize("name", list(registry()))
def test_training_step_under_bf16_autocast(name, acdc_batch):
    """`train.amp: bf16` autocasts the step on CUDA; on the CPU torch autocasts the same kinds of
    ops (convolutions, matrix products) to bf16, so every method's step is run so here: its losses
    stay within bf16's rounding of the float32 step's, and the weights and the optimiser's state
    stay float32."""
    cfg = demo_cfg()
    runs = {}
    for amp in (False, True):
        torch.manual_seed(0)
        method = build_method(cfg, name, 4, 1)
        optimizer = make_optimizer(method, cfg["train"])
        batch = acdc_batch if method.uses_unlabeled else Batch(acdc_batch.labeled, acdc_batch.label, 2)
        runs[amp] = [float(train_step(method, optimizer, batch, t, amp=amp)[0]) for t in (5, 6)]
        assert {p.dtype for p in method.state_dict().values() if p.is_floating_point()} == {torch.float32}
        assert all(v.dtype == torch.float32 for state in optimizer.state.values() for v in state.values()
                   if torch.is_tensor(v) and v.is_floating_point())
    assert runs[True] == pytest.approx(runs[False], rel=0.05), runs


def test_the_determinism_audit_names_the_ops_torch_refuses_on_cuda():
    """The audit above can fail: ops torch documents as nondeterministic on CUDA are named, their
    deterministic neighbours are not."""
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    y = torch.randint(0, 3, (2, 8, 8))
    assert determinism.audit(lambda: torch.nn.functional.cross_entropy(x, y).backward()) == {
        "aten.nll_loss2d_forward.default": 1}
    assert determinism.audit(lambda: torch.nn.functional.cross_entropy(x, y, reduction="none").mean().backward()) == {}
    upsample = torch.nn.functional.interpolate
    assert determinism.audit(lambda: upsample(x, scale_factor=2, mode="bilinear").sum().backward()) == {
        "aten.upsample_bilinear2d_backward.default": 1}
    assert determinism.audit(lambda: upsample(x, scale_factor=2, mode="nearest").sum().backward()) == {}
    assert determinism.audit(lambda: x.cumsum(1).sum().backward()) == {"aten.cumsum.default": 2}  # and its backward
    assert determinism.audit(lambda: y.cumsum(1)) == {}
    assert determinism.audit(lambda: torch.bincount(y.flatten(), weights=x.detach().flatten()[:128])) == {
        "aten.bincount.default": 1}
    assert determinism.audit(lambda: torch.bincount(y.flatten())) == {}


def test_deterministic_mode_sets_torch_cudnn_and_cublas_and_restores_them(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    with determinism.mode(False):
        assert not torch.are_deterministic_algorithms_enabled()
    with determinism.mode(True):
        assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert torch.backends.cudnn.benchmark
    import os
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_bench_and_training_run_in_deterministic_mode(tiny_acdc, tmp_path):
    """On the CPU every kernel is deterministic already: the mode must only not get in the way
    (validation and the final evaluation included), and the records say it was on."""
    from ugpcl.engine.bench import benchmark
    from ugpcl.evaluation import evaluate_run

    cfg = demo_cfg("train.deterministic=true")
    assert benchmark(cfg, "ugpcl", CPU, steps=1, warmup=0)["deterministic"] is True
    cfg = demo_cfg("train.deterministic=true", "train.iterations=4", "train.val_every=2")
    info = {"run_id": "tiny_ugpcl", "method": "ugpcl", "dataset": "acdc", "regime": "tiny", "seed": 1337,
            "profile": "demo", "overrides": {}}
    assert Trainer(cfg, info, tmp_path / "run", data=tiny_acdc).fit(progress=False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert "deterministic: true" in (tmp_path / "run" / "config.yaml").read_text()
    assert evaluate_run(tmp_path / "run", checkpoint="last", data=tiny_acdc)["n_cases"] == 8


class HostToDevice(TorchDispatchMode):
    """Records every operation that takes a tensor of the host (CPU) and gives one on the `meta`
    device, which stands in for a GPU: on a GPU each is a copy from host memory, which waits for the
    device (.to(device) of a CPU tensor, a CPU scalar tensor in a GPU op)."""

    def __init__(self, found: set):
        super().__init__()
        self.found = found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        outs = [o for o in pytree.tree_leaves(out) if isinstance(o, torch.Tensor)]
        if any(a.device.type == "cpu" for a in ins) and any(o.device.type == "meta" for o in outs):
            self.found.add(str(func))
        return out


# made from host data (their copy to the device bypasses the dispatcher), or documented to
# synchronise with the host when given CUDA tensors
FROM_HOST = {torch.tensor, torch.as_tensor, torch.asarray}
SYNCING = {torch.linalg.inv, torch.nonzero, torch.Tensor.nonzero, torch.unique, torch.masked_select}


class WaitsOnDevice(TorchFunctionMode):
    def __init__(self, found: set):
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func in FROM_HOST and str(kwargs.get("device", "cpu")).startswith("meta")
                and not isinstance(args[0], torch.Tensor)):  # a tensor already there is not copied
            self.found.add(func.__name__)
        if func in SYNCING and any(isinstance(a, torch.Tensor) and a.device.type == "meta"
                                   for a in pytree.tree_leaves((args, kwargs))):
            self.found.add(func.__name__)
        return func(*args, **kwargs)


@contextlib.contextmanager
def host_waits(found: set):
    """Both: what would make the host wait for a GPU, seen on the meta device."""
    with WaitsOnDevice(found), HostToDevice(found):
        yield


@pytest.fixture
def meta_autocast(monkeypatch):
    """torch.autocast refuses the meta device even when disabled: a no-op there."""
    autocast = torch.autocast
    monkeypatch.setattr(torch, "autocast", lambda device_type, *a, **kw: contextlib.nullcontext()
                        if device_type == "meta" else autocast(device_type, *a, **kw))


@pytest.mark.parametrize("name", list(registry()))
def test_training_step_copies_nothing_from_the_host(name, meta_autocast):
    """The other direction of the test above: random draws and constants are made on the device."""
    torch.manual_seed(0)
    method = build_method(demo_cfg(), name, 4, 1).to("meta")
    optimizer = make_optimizer(method, demo_cfg()["train"])
    size = demo_cfg()["data"]["image_size"]
    image = torch.empty(4, 1, size, size, device="meta")
    label = torch.zeros(2, size, size, dtype=torch.long, device="meta")
    batch = Batch(image, label, 2) if method.uses_unlabeled else Batch(image[:2], label, 2)
    found: set = set()
    for t in (5, 6):
        with host_waits(found):
            train_step(method, optimizer, batch, t)
    assert found == set()


def test_augmentation_copies_nothing_from_the_host_after_its_first_batch():
    aug = {"crop_scale": [0.8, 1.0], "rot90_flip_p": 0.5, "rotate_p": 0.5, "rotate_deg": 20, "hflip_p": 0.5,
           "color_jitter_p": 1.0, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1,
           "interpolation": "nearest"}
    images = torch.empty(4, 3, 32, 32, device="meta")  # RGB: saturation and hue too
    labels = torch.zeros(4, 32, 32, dtype=torch.uint8, device="meta")
    augment_batch(images, labels, aug)  # the colour constants are copied to the device once
    found: set = set()
    with host_waits(found):
        augment_batch(images, labels, aug)
    assert found == set()


def test_log_rows_for_every_iteration_read_back_every_log_every(tiny_acdc, tmp_path):
    cfg = demo_cfg("train.iterations=7", "train.log_every=3", "train.val_every=100", "train.checkpoint_every=100")
    info = {"run_id": "t", "method": "em", "dataset": "acdc", "regime": "tiny", "seed": 1, "profile": "demo",
            "overrides": {}}
    trainer = Trainer(cfg, info, tmp_path, data=tiny_acdc)
    assert trainer.fit(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["t"] for r in rows] == list(range(7))
    assert all(isinstance(r["loss"], float) and {"sup", "unsup", "weight", "lr"} <= r.keys() for r in rows)


def test_a_regime_smaller_than_the_labeled_batch_names_the_dataset_regime_and_fix(tiny_acdc, tmp_path):
    """The README's own folder example has a regime of 4 images; the paper's labeled half is 8."""
    from ugpcl.data.prepared import load_prepared

    labeled = len(load_prepared(tiny_acdc).labeled_indices("tiny"))
    cfg = demo_cfg(f"train.labeled_bs={labeled + 1}", f"train.batch_size={labeled + 2}",
                   'data.isic.regimes={"91": 40, "181": 40}', "data.demo.isic_images=200")  # the config's own check
    info = {"run_id": "t", "method": "supervised", "dataset": "acdc", "regime": "tiny", "seed": 1,
            "profile": "demo", "overrides": {}}
    with pytest.raises(UserError, match=f"regime 'tiny' of acdc has {labeled} images labeled") as err:
        Trainer(cfg, info, tmp_path, data=tiny_acdc)
    assert "data.acdc.regimes.tiny" in str(err.value) and str(tiny_acdc) in str(err.value)
    assert not any(tmp_path.iterdir()), "nothing written"


def test_a_regime_leaving_too_few_unlabeled_images_stops_before_any_network_is_built(tiny_acdc, tmp_path,
                                                                                     monkeypatch):
    """A regime that labels (almost) every training image: the sampler said 'lower train.batch_size -
    train.labeled_bs', which the configuration refuses at 0; now the regime, the file and a fix that
    works, before any weights are fetched. The supervised baseline without unlabeled images trains."""
    from ugpcl.data.prepared import load_prepared
    from ugpcl.engine import trainer as trainer_module

    data = load_prepared(tiny_acdc)
    labeled, train = len(data.labeled_indices("tiny")), len(data.train)
    cfg = demo_cfg("train.labeled_bs=2", f"train.batch_size={2 + train - labeled + 1}",
                   'data.isic.regimes={"91": 40, "181": 40}', "data.demo.isic_images=200")
    info = {"run_id": "t", "method": "mt", "dataset": "acdc", "regime": "tiny", "seed": 1, "profile": "demo",
            "overrides": {}}
    built = trainer_module.build_method
    monkeypatch.setattr(trainer_module, "build_method", lambda *a: pytest.fail("built before the regime check"))
    with pytest.raises(UserError, match=re.escape(
            f"regime 'tiny' of acdc labels {labeled} of the {train} images for training, leaving {train - labeled} "
            f"unlabeled for the unlabeled part of a batch (train.batch_size - train.labeled_bs: "
            f"{train - labeled + 1})")) as err:
        Trainer(cfg, info, tmp_path, data=tiny_acdc)
    assert str(tiny_acdc) in str(err.value)
    assert err.value.fix.startswith(f"lower data.acdc.regimes.tiny until at least {train - labeled + 1} images stay "
                                    "unlabeled (then `ugpcl prepare acdc` again)")
    assert not any(tmp_path.iterdir()), "nothing written"
    monkeypatch.setattr(trainer_module, "build_method", built)
    supervised = {**info, "method": "supervised"}
    with pytest.raises(UserError, match="leaving"):   # BN sees the unlabeled images by default
        Trainer(cfg, supervised, tmp_path, data=tiny_acdc)
    Trainer(deep_merge(cfg, {"methods": {"supervised": {"batch_norm_unlabeled": False}}}), supervised, tmp_path,
            data=tiny_acdc)


def test_a_method_setting_uses_unlabeled_without_takes_unlabeled_is_named(tiny_acdc, tmp_path, monkeypatch):
    """The batches are drawn before the method is built, by takes_unlabeled(hp): a method that sets
    uses_unlabeled in __init__ otherwise would get batches it does not expect, silently."""
    from ugpcl.methods import base
    from ugpcl.methods.supervised import Supervised

    class Mine(Supervised):   # the pattern supervised.py used before takes_unlabeled
        name = "mine_labeled_only"

        @classmethod
        def takes_unlabeled(cls, hp) -> bool:
            return True

        def __init__(self, setup, hp, model=None):
            super().__init__(setup, hp, model)
            self.uses_unlabeled = False

    monkeypatch.setitem(base._REGISTRY, Mine.name, Mine)
    cfg = demo_cfg()
    cfg["methods"][Mine.name] = dict(cfg["methods"]["supervised"])
    info = {"run_id": "t", "method": Mine.name, "dataset": "acdc", "regime": "tiny", "seed": 1, "profile": "demo",
            "overrides": {}}
    with pytest.raises(UserError, match="sets uses_unlabeled to False but its takes_unlabeled\\(\\) says True") as err:
        Trainer(cfg, info, tmp_path, data=tiny_acdc)
    assert err.value.path == __file__ and "override the classmethod takes_unlabeled(hp)" in err.value.fix


def test_a_nan_loss_stops_training_at_the_next_read_back(tiny_acdc, tmp_path, monkeypatch):
    from ugpcl.methods import base
    from ugpcl.methods.supervised import Supervised

    cfg = demo_cfg("train.iterations=6", "train.log_every=2", "train.lr=1.0e+30", "train.min_lr=1.0e+30")
    info = {"run_id": "t", "method": "supervised", "dataset": "acdc", "regime": "tiny", "seed": 1,
            "profile": "demo", "overrides": {}}
    with pytest.raises(UserError, match="loss became") as err:   # grown there: the learning rate
        Trainer(cfg, info, tmp_path / "lr", data=tiny_acdc).fit(progress=False)
    assert "if it grew there, lower train.lr" in err.value.fix and "--fresh" in err.value.fix

    class ZeroOverZero(Supervised):   # a method author's slip: a mean over no confident pixel
        name = "zero_over_zero"

        def compute_loss(self, batch, t):
            loss, terms = super().compute_loss(batch, t)
            unsup = loss.new_zeros(()) / loss.new_zeros(())
            return loss + unsup, {**terms, "unsup": unsup.detach()}

    monkeypatch.setitem(base._REGISTRY, ZeroOverZero.name, ZeroOverZero)
    cfg = demo_cfg("train.iterations=6", "train.log_every=2")
    cfg["methods"][ZeroOverZero.name] = dict(cfg["methods"]["supervised"])
    with pytest.raises(UserError, match=re.escape("loss became nan at iteration 0 (the first, before any update) "
                                                  "(unsup nan)")) as err:
        Trainer(cfg, {**info, "method": ZeroOverZero.name}, tmp_path / "mine", data=tiny_acdc).fit(progress=False)
    assert err.value.fix.startswith("the method's arithmetic is the likely cause: look at ZeroOverZero.compute_loss "
                                    f"in {__file__} (line ")   # the method's file, not the learning rate


# --- projected wall time ------------------------------------------------------------------------
def test_projection_is_steps_times_step_time_plus_validations(tmp_path):
    from ugpcl.commands.train import _without
    from ugpcl.projection import read_bench, run_seconds
    from ugpcl.study import find_run

    cfg = load_config(profile="paper")
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([{"method": "ugpcl", "median_step_s": 0.5, "eval_s_per_image": 0.001},
                                 {"method": "mt", "median_step_s": 0.2, "eval_s_per_image": 0.001}]))
    results = read_bench(bench)
    run = find_run(cfg, "acdc136_ugpcl")
    validations = cfg["train"]["iterations"] // cfg["train"]["val_every"] + 1
    assert run_seconds(run, cfg, results, 1000) == pytest.approx(6000 * 0.5 + validations * 1000 * 0.001)
    assert run_seconds(run, cfg, results, None) == pytest.approx(3000)
    assert run_seconds(find_run(cfg, "acdc136_cps"), cfg, results, None) is None
    for empty in ("{}", "[]"):
        bench.write_text(empty)
        with pytest.raises(UserError, match="not `ugpcl bench` results"):
            read_bench(bench)
    assert _without(["bench", "--processes", "2", "--json=x", "--steps", "3"], "--processes", "--json") == \
        ["bench", "--steps", "3"]


def test_runs_sharing_the_device_project_the_study_divided_among_them(tmp_path, capsys):
    import os
    import subprocess
    import sys

    from ugpcl.cli import main
    from ugpcl.projection import read_bench, runs_at_once

    # `bench --processes 2` writes what `runs --bench` reads: each run's times while two shared the device
    shared = tmp_path / "shared.json"
    out = subprocess.run([sys.executable, "-m", "ugpcl.cli", "bench", "--profile", "demo", "--method",
                          "supervised", "--processes", "2", "--steps", "2", "--warmup", "1", "--device", "cpu",
                          "--json", str(shared)],
                         check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    entry = read_bench(shared)["supervised"]
    # for a person, on stderr: the total throughput and each process's step (stdout stays JSON)
    each = ", ".join(f"{s:.4g}" for s in entry["median_step_s_each"])
    assert out.stderr.strip().splitlines()[-1] == (f"supervised, 2 processes at once: "
                                                   f"{entry['images_per_s_total']:.1f} images/s in total; "
                                                   f"median step {each} s"), out.stderr
    assert json.loads(out.stdout)[0] == json.loads(shared.read_text())[0]
    assert entry["processes"] == 2 == len(entry["median_step_s_each"]) and entry["images_per_s_total"] > 0
    assert entry["median_step_s"] == pytest.approx(sum(entry["median_step_s_each"]) / 2, abs=1e-4)
    assert entry["eval_s_per_image"] > 0 and runs_at_once(read_bench(shared), shared) == 2
    assert entry["timed_together_s"] > 0   # both timed at once: the barrier waited for the slower start-up

    def total(bench: list[dict], status: int = 0) -> str:
        path = tmp_path / "bench.json"
        path.write_text(json.dumps(bench))
        assert main(["runs", "--profile", "paper", "--set", f"paths.results={tmp_path}", "--bench", str(path)]) == status
        out = capsys.readouterr()
        return out.out.splitlines()[-1] if status == 0 else out.err

    alone = [{"method": "ugpcl", "median_step_s": 0.5, "eval_s_per_image": 0.001},
             {"method": "mt", "median_step_s": 0.2, "eval_s_per_image": 0.001}]
    # 12 UGPCL runs (Tables 1-3) and 4 MT runs of 6000 iterations; no prepared data here, so no validation
    assert total(alone).startswith("projected: 11:20:00 one run at a time on the benchmarked device (16 of 40")
    two = [{**r, "processes": 2} for r in alone]
    assert total(two).startswith("projected: 5:40:00 2 runs at a time, each as long as measured with 2 sharing")
    assert "results of different numbers of processes sharing the device ([1, 2])" in total([two[0], alone[1]], 2)


def test_the_benchmark_barrier_holds_each_process_until_all_have_reached_the_same_point(tmp_path):
    """`bench --processes K`: the K processes start up in different times; the barrier makes each wait
    for the last before its timed steps, and names where they waited when one never comes."""
    import threading
    import time

    from ugpcl.engine.bench import file_barrier

    passed = {}

    def party(me: int, delay: float) -> None:
        time.sleep(delay)
        file_barrier(tmp_path, 3, me)("ugpcl-steps")
        passed[me] = time.monotonic()

    start = time.monotonic()
    threads = [threading.Thread(target=party, args=(i, d)) for i, d in enumerate((0.0, 0.05, 0.6))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert min(passed.values()) - start >= 0.6   # nobody went on before the last arrived
    assert max(passed.values()) - min(passed.values()) < 0.3
    with pytest.raises(TimeoutError, match="did not reach 'ugpcl-eval' in 0 s"):
        file_barrier(tmp_path, 2, 0, timeout=0.2)("ugpcl-eval")
