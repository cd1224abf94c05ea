"""Where the paper and the reference code differ: the one table of those choices.

Each row is one key of params.yaml. Its default follows the code (the authors' UGPCL code, or
SSL4MIS for the baselines) unless the paper states otherwise. The README section, the HTML
report and every run's `run.json` render from this table; a test keeps the README in step.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    key: str        # dotted key in params.yaml (`methods.*.k`: that key of every method having it)
    paper: str      # what the paper says
    code: str       # what the reference code does
    source: str     # where that is documented (METHODS.md section, config file)


TRAINER = "authors' codes/trainers/ugpcl_trainer.py"

CHOICES: tuple[Choice, ...] = (
    Choice("train.iterations", "6000", "10000 (ACDC-136 config)", "METHODS §3.7"),
    Choice("methods.*.ramp_schedule", "lambda_t rises 0 -> 0.01 over training",
           "literal ramps that end on each code's own last iteration (`code`): SSL4MIS epoch 150 x length 200 = "
           "30000, UGPCL 100 x 100 = 10000; run for 6000 iterations they peak at 3.9% (baselines) and 43% (UGPCL) "
           "of lambda. `run`: scaled to reach lambda on the last iteration", "METHODS §1, §3.3 step 5, §5.1"),
    Choice("train.min_lr", "poly decay to 0.001", "floor 1e-4", "METHODS §3.3 step 7"),
    Choice("train.amp", "not stated", "float32 throughout (both codes); ours: bf16 autocast of CUDA training "
           "steps, for speed (`none`: float32); validation, evaluation and predict in float32", "METHODS §1, §3"),
    Choice("train.weight_decay", "5e-4", "UGPCL 5e-4; SSL4MIS 1e-4", "METHODS §1, §3.3"),
    Choice("model.swin.train_pos_embed", "learnable (eq. 2)", "never trained (false)", "METHODS §3.1"),
    Choice("train.dice_background", "not stated", "UGPCL false; SSL4MIS true", "METHODS §5.3"),
    Choice("data.acdc.interpolation", "resized to 224 x 224", "images zoomed with order 0 (nearest) in both codes",
           "METHODS §1, §3.2"),
    Choice("train.augment.interpolation", "not stated", "nearest: SSL4MIS ndimage.rotate order 0; the UGPCL config "
           "has no resampling augmentation", "METHODS §1, §3.2"),
    Choice("train.augment.crop_scale", "random crop", "RandomCrop 224 on 224 images (a no-op)", "METHODS §3.2"),
    Choice("train.augment.rot90_flip_p", "random rotating, random flipping (every method)",
           "the authors' baseline configs 0.5 (acdc_224.yaml, as SSL4MIS); their UGPCL config 0", "METHODS §1, §3.2"),
    Choice("train.augment.rotate_p", "random rotating", "0.5 where no quarter turn was drawn (RandomGenerator's "
           "`elif`: 50/25/25); the UGPCL config 0; SSL4MIS since June 2025: 1 (50/50)", "METHODS §1, §3.2"),
    Choice("train.augment.color_jitter_p", "color jittering", "torchvision ColorJitter(0.4, 0.4, 0.4, 0.1) with "
           "p 0.8, its four operations in random order. Ours: 0.8, in a fixed order (brightness, contrast, "
           "saturation, hue; on grey images only the first two act, and they commute but for clipping), hue as "
           "a rotation in YIQ space", "METHODS §3.2"),
    Choice("methods.ugpcl.augment_rotation", "not stated", "false: the UGPCL config sets p_flip = p_rot = 0 "
           "(\"Remove random rotation\"), its step turns every image by k quarter turns and up to 20 degrees",
           "METHODS §3.2, §3.3"),
    Choice("methods.uamt.head_dropout", "not stated", "SSL4MIS's UNet has encoder dropout (0.05-0.5) in every "
           "method's network; the authors' UNet-R50 baselines (smp) have none. Ours: none, but UA-MT's 0.1 before "
           "the seg head, the source its Monte Carlo uncertainty needs", "METHODS §1, §2 UA-MT"),
    Choice("methods.supervised.batch_norm_unlabeled", "trained with the labeled images only",
           "the two-stream batch of 16 is forwarded whole and the loss takes the labeled 8, so batch "
           "normalisation (and its running statistics) sees the unlabeled 8 too (true)", "METHODS §3.7; §5 pitfall 4"),
    Choice("methods.cct.supervision", "not stated; CCT itself (Ouali et al. 2020) supervises the main decoder only "
           "(`main`)", "SSL4MIS: L_sup = (4 CE + 4 Dice) / 8 over the main and the three auxiliary decoders, so the "
           "evaluated main decoder gets a quarter of a lone decoder's supervised gradient (`all`)", "METHODS §2 CCT"),
    Choice("methods.ugpcl.rotation_interpolation", "not stated",
           "nearest (torchvision rotate's default) for images and labels", f"METHODS §3.3 step 1; {TRAINER}"),
    Choice("methods.ugpcl.rotate_without_equivariance", "rotation is the transformation of l_e (eqs. 10-12)",
           "rotates only when cls_weight >= 0: cls_weight 0 rotates without l_e (true), a negative one does "
           "neither (false); the configs of Table 2's rows without l_e are not published", TRAINER),
    Choice("methods.ugpcl.equivariance_turns", "l_e is the mean of the rotation CE over all four turns of each "
           "image (eq. 12, C = 4)", "one random turn k per image, its CE alone: a one-sample estimate of that mean "
           "(`one`); `all` adds the other three turns, through the encoder and the rotation head only",
           f"METHODS §3.3 step 1; {TRAINER}"),
    Choice("methods.ugpcl.contrast_start", "not stated", "contrast on for t > 1000", "METHODS §3.3 step 6"),
    Choice("methods.ugpcl.memory_size", "not stated", "500 (ACDC-136 config)", "METHODS §3.7"),
    Choice("methods.ugpcl.pseudo_labels", "pseudo-label contrast (Table 2 row 6)",
           "contrast_type pseudo: the CNN head's argmax on every image, labeled ones too (cnn); `mean`: the "
           "decoders' mean on unlabeled images, ground truth on labeled ones", TRAINER),
    Choice("methods.ugpcl.self_mask_quirk", "positives: every key of the anchor's class (eqs. 8-9)",
           "also zeroes entry (i, i) of the positive mask, dropping queue row i from anchor i's positives (true)",
           "METHODS §3.5 step 5; ../shared/reference/README.md"),
    Choice("evaluation.protocol", "not stated", "2D validation slices at 224 px, Dice pooled per batch of 16; a "
           "class absent from a batch gives NaN, which the code's sum over batches carries into the class mean "
           "(ours: that batch is left out)", "METHODS §4"),
    Choice("evaluation.checkpoint", "not stated", "UGPCL: checkpoints every 1000 iterations, scored by test.py on "
           "the same validation slices (selection and score on one set); SSL4MIS: best on val, reported on test. "
           "Here: best on the validation cases it is scored on (chosen by a quick score, mean foreground Dice per case at "
           "the network's input size; tables score the original resolution); best and last both evaluated, tables "
           "show both",
           "METHODS §1, §4"),
    Choice("evaluation.hd95", "not reported", "SSL4MIS: medpy hd95 (both directed distance sets pooled) in voxels; "
           "UGPCL: none. Ours in mm where the data gives spacing", "METHODS §4"),
)


# The set-up the paper states (Section 4.1; ../shared/paper/README.md). A configuration departing from
# one of these (the demo profile, an encoder without ImageNet weights) is not at the paper's scale: the
# report says so beside every comparison with the paper's numbers.
PAPER_SETTINGS: dict[str, object] = {
    "data.image_size": 224, "model.encoder": "resnet50", "model.width": 64, "model.blocks": [3, 4, 6, 3],
    "model.pretrained": True, "train.iterations": 6000, "train.batch_size": 16, "train.labeled_bs": 8,
    "train.lr": 0.01, "train.min_lr": 0.001, "train.momentum": 0.9, "train.weight_decay": 0.0005,
    "methods.ugpcl.tf_weight": 0.4, "methods.ugpcl.consistency": 0.01, "methods.ugpcl.rotation_weight": 0.1,
    "methods.ugpcl.contrast_weight": 0.1,
}


def departures(cfg: dict) -> list[tuple[str, object, object]]:
    """(key, value in cfg, the paper's) of every PAPER_SETTINGS key that cfg sets otherwise."""
    out = []
    for key, paper in PAPER_SETTINGS.items():
        ours = value(cfg, key)
        if (list(ours) if isinstance(ours, tuple) else ours) != paper:
            out.append((key, ours, paper))
    return out


def departures_text(cfg: dict) -> str:
    """One sentence naming cfg's departures from the paper's set-up, or "" when there are none."""
    found = departures(cfg)
    if not found:
        return ""
    shown = "; ".join(f"{key} {_show(ours)}, the paper's {_show(paper)}" for key, ours, paper in found)
    return (f"Not the paper's set-up (its Section 4.1): {shown}. How close a number comes to the paper's "
            "is indicative only.")


def value(cfg: dict, key: str):
    """The value of a dotted key; `methods.*.k`: {method: value} over the methods that have k."""
    if "*" in key:
        head, tail = key.split(".*.", 1)
        found = {name: value(section, tail) for name, section in value(cfg, head).items()
                 if _has(section, tail)}
        if not found:
            raise KeyError(key)
        return found
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _has(section, key: str) -> bool:
    try:
        value(section, key)
    except (KeyError, TypeError):
        return False
    return True


def in_force(cfg: dict) -> dict:
    """{key: value in cfg} of every choice (what run.json records)."""
    return {c.key: value(cfg, c.key) for c in CHOICES}


def rows(cfg: dict) -> list[dict[str, str]]:
    """The table with the values of `cfg` in the "ours" column."""
    return [{"key": c.key, "ours": _show(value(cfg, c.key)), "paper": c.paper, "authors' code": c.code,
             "source": c.source} for c in CHOICES]


def markdown(cfg: dict) -> str:
    table = rows(cfg)
    head = list(table[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cells = [f"`{row['key']}`", *(row[h].replace("|", "\\|") for h in head[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _show(v) -> str:
    if isinstance(v, dict):  # a wildcard key: one value if all agree, else each method's
        shown = {k: _show(x) for k, x in v.items()}
        distinct = set(shown.values())
        return distinct.pop() if len(distinct) == 1 else ", ".join(f"{k}: {x}" for k, x in shown.items())
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)
