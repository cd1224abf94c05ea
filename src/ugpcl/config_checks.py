"""Every constraint between keys of params.yaml, in one place, checked when the configuration is
loaded (`config.validate`, after the schema): a configuration that would fail later (mid-training,
or after the data stage has run) is refused before anything runs, with a message naming the keys.
A key that is set but would have no effect (`WARNINGS`) is a warning on stderr, once per process.

The schema checks each key alone; method hyper-parameters are checked against their dataclasses
(`methods.check_config`) and the experiment matrix against data regimes by `study.check_study`.
"""

from __future__ import annotations

from .errors import UserError, warn_once

RESNET50_WIDTH = 64  # the only width with ImageNet weights (models.resnet.STANDARD_WIDTH)
RESNET50_BLOCKS = [3, 4, 6, 3]  # and the only depth
DEMO_FRAMES = 2      # the ACDC demo writes two frames (ED, ES) per patient (data.demo)


def isic_train_count(n_images: int, split: list[int]) -> int:
    """Training images of an ISIC split of `n_images` (the rule of data.isic.split_ids)."""
    a, b = split
    return round(n_images * a / (a + b))


def _batches(cfg: dict) -> list[str]:
    tr = cfg["train"]
    if tr["labeled_bs"] >= tr["batch_size"]:
        return [f"train.labeled_bs ({tr['labeled_bs']}) must be smaller than train.batch_size ({tr['batch_size']}): "
                "each batch is labeled_bs labeled images followed by batch_size - labeled_bs unlabeled ones, and "
                "the semi-supervised losses of an empty unlabeled half are NaN"]
    return []


def _schedule(cfg: dict) -> list[str]:
    tr = cfg["train"]
    out = []
    if tr["min_lr"] > tr["lr"]:
        out.append(f"train.min_lr ({tr['min_lr']}) exceeds train.lr ({tr['lr']}): the poly schedule would never apply")
    if tr["deterministic"] and tr["speed"]["cudnn_benchmark"] is True:
        out.append("train.deterministic is true but train.speed.cudnn_benchmark is true: cuDNN's autotuning picks "
                   "its convolution algorithms by timing them, so two runs may differ (set one of them false; "
                   "cudnn_benchmark: auto gives way to deterministic)")
    low, high = tr["augment"]["crop_scale"]
    if not 0 < low <= high:
        out.append(f"train.augment.crop_scale {[low, high]} must be [low, high] with 0 < low <= high (area fractions)")
    return out


def _model(cfg: dict) -> list[str]:
    m = cfg["model"]
    out = []
    if m["pretrained"] and m["width"] != RESNET50_WIDTH:
        out.append(f"model.pretrained is true but model.width is {m['width']}: ImageNet weights exist only for "
                   f"the ResNet-50 width {RESNET50_WIDTH} (set model.width: {RESNET50_WIDTH} or model.pretrained: false)")
    if m["pretrained"] and m["blocks"] != RESNET50_BLOCKS:
        out.append(f"model.pretrained is true but model.blocks is {m['blocks']}: ImageNet weights exist only for "
                   f"ResNet-50's {RESNET50_BLOCKS} (set model.blocks: {RESNET50_BLOCKS} or model.pretrained: false)")
    s = m["swin"]
    for i, heads in enumerate(s["heads"]):
        width = s["embed_dim"] * 2**i
        if width % heads:
            out.append(f"model.swin.heads[{i}] = {heads} does not divide the width of stage {i}, model.swin.embed_dim "
                       f"* 2**{i} = {width} (attention heads split the channels evenly)")
    return out


def _sources(cfg: dict) -> list[str]:
    return [f"data.{name}.source is local but data.{name}.local_dir is not set"
            for name in ("acdc", "isic") if cfg["data"][name]["source"] == "local" and not cfg["data"][name]["local_dir"]]


def _regime_sizes(cfg: dict) -> list[str]:
    """Labeled regimes against the demo data's sizes (known before it is generated) and the batch."""
    tr, data, demo = cfg["train"], cfg["data"], cfg["data"]["demo"]
    unlabeled_bs = tr["batch_size"] - tr["labeled_bs"]
    out = []
    if data["acdc"]["source"] == "demo":
        patients, per_patient = demo["acdc_train_patients"], DEMO_FRAMES * demo["acdc_slices"]
        for regime, n in data["acdc"]["regimes"].items():
            where = f"data.acdc.regimes[{regime!r}] = {n} patients"
            if n >= patients:
                out.append(f"{where} leaves no unlabeled patient of data.demo.acdc_train_patients = {patients}")
            elif n * per_patient < tr["labeled_bs"]:
                out.append(f"{where} are {n * per_patient} slices, fewer than train.labeled_bs = {tr['labeled_bs']}")
            elif (patients - n) * per_patient < unlabeled_bs:
                out.append(f"{where} leave {(patients - n) * per_patient} unlabeled slices, fewer than "
                           f"train.batch_size - train.labeled_bs = {unlabeled_bs}")
    if data["isic"]["source"] == "demo":
        n_train = isic_train_count(demo["isic_images"], data["isic"]["split"])
        if not 0 < n_train < demo["isic_images"]:
            out.append(f"data.isic.split {data['isic']['split']} of data.demo.isic_images = {demo['isic_images']} "
                       f"gives {n_train} training and {demo['isic_images'] - n_train} validation images; both must "
                       "be at least 1")
        for regime, k in data["isic"]["regimes"].items():
            where = f"data.isic.regimes[{regime!r}] = {k} images"
            if k >= n_train:
                out.append(f"{where} leaves no unlabeled image of the {n_train} training images of the demo "
                           f"(data.demo.isic_images = {demo['isic_images']}, data.isic.split)")
            elif k < tr["labeled_bs"]:
                out.append(f"{where} are fewer than train.labeled_bs = {tr['labeled_bs']}")
            elif n_train - k < unlabeled_bs:
                out.append(f"{where} leave {n_train - k} unlabeled images, fewer than train.batch_size - "
                           f"train.labeled_bs = {unlabeled_bs}")
    return out


def _unused(cfg: dict) -> list[str]:
    """Keys that are set but have no effect (warnings: the run is still valid)."""
    m = cfg["model"]
    if m["weights"] and not m["pretrained"]:
        return [f"model.weights is set ({m['weights']}) but model.pretrained is false, so it is not used "
                "(set model.pretrained=true to start from those weights, or drop model.weights)"]
    return []


CHECKS = (_batches, _schedule, _model, _sources, _regime_sizes)
WARNINGS = (_unused,)
_warn = warn_once()  # each warning once per process (the configuration is loaded more than once)


def problems(cfg: dict) -> list[str]:
    """Every cross-key constraint `cfg` breaks (an already schema-valid configuration)."""
    return [p for check in CHECKS for p in check(cfg)]


def warnings_in(cfg: dict) -> list[str]:
    """What in `cfg` is allowed but very likely not what was meant (printed, not refused)."""
    return [w for check in WARNINGS for w in check(cfg)]


def check(cfg: dict, source="params.yaml", overrides: list[str] = ()) -> None:
    """UserError listing every constraint between keys that `cfg` breaks; `overrides` (the --set
    options applied, as typed) are named in it, as they may be where a value came from."""
    found = problems(cfg)
    if found:
        applied = f"\n  (with --set {', --set '.join(overrides)})" if overrides else ""
        raise UserError("inconsistent configuration:\n" + "\n".join(f"  {p}" for p in found) + applied,
                        path=source, fix="change these keys so that they agree (in params.yaml, its profile, or --set)")
    for warning in warnings_in(cfg):
        _warn(f"{source}: {warning}")
