"""What a folder dataset holds, for `ugpcl inspect` and the preparation's summary: counts, image
sizes and value ranges, class pixel fractions, and warnings for what looks wrong but does not
stop preparation (a class in no mask or in no validation case, upsampled or non-square images,
grey mixed with colour). Problems that do stop it are errors (folder_files, folder)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .split import counted

SHOWN = 20  # errors listed by `describe` before "... and N more"
NAMED = 5  # files named in one line of problems that several files share


@dataclass
class CaseStats:
    id: str
    group: str
    volume: bool
    depth: int                 # slices
    size: tuple[int, int]      # H, W of the image
    channels: int
    dtype: str
    vmin: float                # over the finite values
    vmax: float
    finite: bool
    values: dict               # mask value -> pixels (values outside the classes included)
    spacing: tuple | None = None  # a volume's voxel size (z, y, x) in mm, where its file gives one


def case_stats(case, image: np.ndarray, mask: np.ndarray, spacing: tuple | None = None) -> CaseStats:
    """Statistics of one case as stored (image Z x H x W [x 3], mask Z x H x W; `spacing`: its voxel size)."""
    finite = image.dtype.kind != "f" or bool(np.isfinite(image).all())
    valid = image if finite else image[np.isfinite(image)]
    vmin, vmax = (float(valid.min()), float(valid.max())) if valid.size else (float("nan"), float("nan"))
    values, counts = np.unique(mask, return_counts=True)
    as_key = (lambda v: int(v) if float(v).is_integer() else float(v))
    return CaseStats(case.id, case.group, case.volume, int(image.shape[0]), tuple(int(s) for s in image.shape[1:3]),
                     3 if image.ndim == 4 else 1, str(image.dtype), vmin, vmax, finite,
                     {as_key(v): int(n) for v, n in zip(values, counts)}, spacing if case.volume else None)


def voxel_sizes(stats: list[CaseStats], side: dict[str, str] | None = None) -> dict | None:
    """How many validation volumes (all volumes before a split) give a voxel size: HD95 and ASD are
    in mm only when every one does (one unit for every distance), else in voxels. None: no volumes."""
    volumes = [s for s in stats if s.volume and (not side or side.get(s.id) == "val")]
    if not volumes:
        return None
    missing = [s.id for s in volumes if s.spacing is None]
    return {"volumes": len(volumes), "given": len(volumes) - len(missing), "missing": missing[:1],
            "unit": "voxel" if missing else "mm", "part": "validation volumes" if side else "volumes"}


def survey_report(stats: list[CaseStats], spec, size: int, side: dict[str, str] | None = None) -> dict:
    """Counts, sizes, channels, types, value range and per class: mask value, pixel fraction, cases."""
    pixels = Counter()
    for s in stats:
        pixels.update(s.values)
    total = sum(pixels.values()) or 1
    classes = {}
    for value, name in spec.classes.items():
        holding = [s for s in stats if s.values.get(value)]
        classes[name] = {"value": value, "fraction": round(pixels[value] / total, 6), "cases": len(holding)}
        if side:
            for part in ("train", "val"):
                classes[name][f"{part}_cases"] = sum(side.get(s.id) == part for s in holding)
    sizes = Counter(f"{h}x{w}" for s in stats for h, w in [s.size])
    finite = [s for s in stats if s.vmin == s.vmin]
    return {
        "cases": len(stats),
        "volumes": sum(s.volume for s in stats),
        "slices": sum(s.depth for s in stats),
        "groups": len({s.group for s in stats}),
        "sizes": dict(sizes.most_common(10)),
        "distinct_sizes": len(sizes),
        "channels": {"grey": sum(s.channels == 1 for s in stats), "RGB": sum(s.channels == 3 for s in stats)},
        "dtypes": dict(Counter(s.dtype for s in stats)),
        "value_range": [min((s.vmin for s in finite), default=None), max((s.vmax for s in finite), default=None)],
        "classes": classes,
        **({"voxel_sizes": sizes} if (sizes := voxel_sizes(stats, side)) else {}),
    }


def dataset_warnings(stats: list[CaseStats], spec, size: int, side: dict[str, str] | None = None) -> list[str]:
    """What looks wrong but does not stop preparation."""
    out = []
    report = survey_report(stats, spec, size, side)
    for name, c in report["classes"].items():
        if not c["cases"]:
            out.append(f"class {name!r} (mask value {c['value']}) appears in no mask")
            continue
        if side and not c["val_cases"]:
            out.append(f"class {name!r} appears in no validation case: its scores will be undefined")
        if side and not c["train_cases"]:
            out.append(f"class {name!r} appears in no training case: the networks never see it")
    small = [s for s in stats if min(s.size) < size]
    if small:
        out.append(f"{len(small)} of {len(stats)} cases are smaller than image_size {size} on a side (e.g. "
                   f"{small[0].id}, {small[0].size[0]}x{small[0].size[1]}): they are upsampled")
    oblong = [s for s in stats if s.size[0] != s.size[1]]
    if oblong:
        out.append(f"{len(oblong)} of {len(stats)} cases are not square (e.g. {oblong[0].id}, "
                   f"{oblong[0].size[0]}x{oblong[0].size[1]}): resized to {size}x{size}, their aspect ratio is not kept")
    grey, rgb = report["channels"]["grey"], report["channels"]["RGB"]
    if grey and rgb:
        out.append(f"{grey} grey and {rgb} RGB cases: the grey ones are replicated to 3 channels")
    if len(report["dtypes"]) > 1:
        out.append(f"mixed pixel types {report['dtypes']}: 8-bit images are kept as they are (0..255), the "
                   "others are min-max normalised per file to 0..255, so the two are scaled differently (all "
                   "are stored as 8 bits)")
    sizes = report.get("voxel_sizes")
    if sizes and 0 < sizes["given"] < sizes["volumes"]:
        out.append(f"{sizes['given']} of the {sizes['volumes']} {sizes['part']} give a voxel size and "
                   f"{sizes['volumes'] - sizes['given']} do not (e.g. {sizes['missing'][0]}): HD95 and ASD are in "
                   "voxels for all of them, not in mm")
    flat = [s.id for s in stats if s.finite and s.vmin == s.vmax]
    if flat:
        out.append(f"{len(flat)} images are constant: {', '.join(flat[:5])}")
    return out


def grouped(problems: list[UserError]) -> list[str]:
    """The problems' texts, in order; those saying the same of several files (same message and fix:
    masks saved 0/255 under classes {0, 1}, say) as one line naming how many files and the first few."""
    groups: dict[tuple, list[UserError]] = {}
    for p in problems:
        groups.setdefault((p.message, p.fix) if p.path is not None else (id(p),), []).append(p)
    out = []
    for same in groups.values():
        if len(same) == 1:
            out.append(str(same[0]))
            continue
        paths = [Path(p.path) for p in same]
        folders = {p.parent for p in paths}
        names = [p.name if len(folders) == 1 else str(p) for p in paths]
        listed = ", ".join(names[:NAMED]) + (f" and {len(names) - NAMED} more" if len(names) > NAMED else "")
        where = f"{len(paths)} files in {folders.pop()}" if len(folders) == 1 else f"{len(paths)} files"
        out.append(str(UserError(same[0].message, path=f"{where} ({listed})", fix=same[0].fix)))
    return out


def describe(report: dict) -> str:
    """`ugpcl inspect`'s text."""
    lines = [f"{report['dataset']}: {report.get('cases', 0)} cases"]
    if report.get("cases"):
        lines[0] += (f" ({counted(report['slices'], 'slice')}, {counted(report['volumes'], 'volume')}), "
                     f"{counted(report['groups'], 'group')}; {counted(report['distinct_sizes'], 'image size')}, "
                     "most common "
                     + ", ".join(f"{k} ({n})" for k, n in list(report["sizes"].items())[:3]))
        lo, hi = report["value_range"]
        lines.append(f"  pixels: {report['channels']['grey']} grey, {report['channels']['RGB']} RGB cases; types "
                     + ", ".join(f"{k} ({n})" for k, n in report["dtypes"].items()) + f"; values {lo:g}..{hi:g}")
        lines.append("  classes (mask value: pixel fraction, cases holding it):")
        for name, c in report["classes"].items():
            where = f" (train {c['train_cases']}, val {c['val_cases']})" if "val_cases" in c else ""
            lines.append(f"    {name} ({c['value']}): {100 * c['fraction']:.2f}%, {c['cases']} cases{where}")
    sizes = report.get("voxel_sizes")
    if sizes:
        n, given, part = sizes["volumes"], sizes["given"], sizes["part"]
        whose = (f"all {n} {part} give a voxel size" if given == n else
                 f"{n - given} of the {n} {part} give none (see the warnings)" if given else
                 f"none of the {counted(n, part[:-1])} gives a voxel size (a NIfTI header, an HDF5 `spacing`)")
        lines.append(f"  distances (HD95, ASD): in {'mm' if given == n else 'voxels'}; {whose}")
    if "split" in report:
        split = report["split"]
        lines.append(f"  split: train {split['train']}; val {split['val']}")
        for regime, text in split["labeled"].items():
            lines.append(f"  labeled {regime}: {text}")
    for title, items in (("errors (prepare would stop)", report["errors"]), ("warnings", report["warnings"])):
        if items:
            lines.append(f"  {title}:")
            lines += [f"    - {item}" for item in items[:SHOWN]]
            if len(items) > SHOWN:
                lines.append(f"    ... and {len(items) - SHOWN} more")
    if not report["errors"] and not report["warnings"]:
        lines.append("  no problems found")
    return "\n".join(lines) + "\n"
