"""A folder dataset's files: what the config says (`FolderSpec`), which files pair up, their groups
and which side of the split each case lands on.

Patterns name files relative to their folder: `{id}` (once) stands for the case id, any run of
characters without `/`; `*` matches any run of characters without `/`; everything else is
literal; `/` descends into subfolders (`{id}/scan.nii.gz`, `*/{id}.png`). Hidden files (a name
starting with `.`) are never matched. When images and masks share a folder, a file that
matches the mask pattern is a mask, never an image (`{id}.png` beside `{id}_mask.png`); an
HDF5 file may be both (the same pattern: datasets `image` and `label` in one file).

The group of a case is the first capture group (else the whole match) of the `group` regular
expression searched in its id, e.g. `^(patient\\d+)_` groups `patient001_frame01` and
`patient001_frame12`; without `group` every case is its own group.

Problems are collected as UserErrors (`find_cases` returns them all, for `ugpcl inspect`);
preparation stops at the first one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config import dataset_config, resolve_path
from ..errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".h5", ".hdf5")
SHOWN = 10  # file names listed in one message


@dataclass(frozen=True)
class FolderSpec:
    """One dataset of the folder kind, resolved from `data.<name>` (see the README, 'Your own data')."""

    name: str
    images: Path
    masks: Path
    image_pattern: str
    mask_pattern: str
    classes: dict[int, str]            # mask value -> class name, ascending: class i = i-th smallest value
    split: list[int] | dict[str, Path]  # [train, val] ratio, or {"train": list file, "val": list file}
    seed: int
    regimes: dict[str, int | float]
    group: str | None = None
    folder_key: dict[str, str] = field(default_factory=dict)  # key -> the config key to correct, where it differs
    mask_fix: str = ""  # the fix for mask values outside `classes`, where naming the key does not help

    def key(self, name: str) -> str:
        """The config key a message tells the user to correct."""
        return self.folder_key.get(name, f"data.{self.name}.{name}")


def spec_from_config(cfg: dict, name: str) -> FolderSpec:
    entry = dataset_config(cfg, name)
    images = resolve_path(entry["images"])
    split = entry["split"]
    if isinstance(split, dict):
        split = {side: resolve_path(split[side]) for side in ("train", "val")}
    classes = {int(value): str(label) for value, label in entry["classes"].items()}
    return FolderSpec(
        name=name, images=images, masks=resolve_path(entry["masks"]) if entry.get("masks") else images,
        image_pattern=entry["image_pattern"], mask_pattern=entry["mask_pattern"],
        classes=dict(sorted(classes.items())), split=split, seed=int(entry["seed"]),
        regimes=dict(entry["regimes"]), group=entry.get("group"),
    )


@dataclass(frozen=True)
class Case:
    id: str
    image: Path
    mask: Path
    group: str

    @property
    def volume(self) -> bool:
        """A NIfTI or HDF5 file (scored at its own resolution, resized linearly), not a photo-like 2D image."""
        return suffix(self.image) in VOLUME_SUFFIXES


def suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def compile_pattern(pattern: str, key: str) -> re.Pattern:
    """The regular expression of a file pattern, `id` its one named group."""
    if pattern.count("{id}") != 1 or pattern.startswith("/") or ".." in pattern.split("/"):
        raise UserError(f"file pattern {pattern!r} must hold {{id}} exactly once and stay inside its folder",
                        fix=f"correct {key}, e.g. '{{id}}.png' or '{{id}}_mask.png'")
    parts = re.split(r"(\{id\}|\*)", pattern)
    regex = "".join("(?P<id>[^/]+)" if p == "{id}" else "[^/]*" if p == "*" else re.escape(p) for p in parts)
    return re.compile(regex)


def list_files(folder: Path, depth: int) -> list[str]:
    """Relative POSIX paths of the non-hidden files up to `depth` levels down, sorted."""
    found = []

    def walk(directory: Path, prefix: str, level: int) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    if level < depth:
                        walk(Path(entry.path), f"{prefix}{entry.name}/", level + 1)
                elif level == depth:
                    found.append(prefix + entry.name)

    walk(folder, "", 1)  # a pattern of k parts names files k levels down
    return sorted(found)


def _matches(folder: Path, pattern: str, key: str, exclude: re.Pattern | None = None) -> dict[str, list[str]]:
    """id -> the files of `folder` matching `pattern` (files matching `exclude` left out)."""
    regex = compile_pattern(pattern, key)
    out: dict[str, list[str]] = {}
    for rel in list_files(folder, pattern.count("/") + 1):
        if (m := regex.fullmatch(rel)) and not (exclude and exclude.fullmatch(rel)):
            out.setdefault(m["id"], []).append(rel)
    return out


def _shown(names) -> str:
    names = list(names)
    return ", ".join(names[:SHOWN]) + (f" ... ({len(names)} in all)" if len(names) > SHOWN else "")


def _check_folder(folder: Path, key: str) -> None:
    if not folder.is_dir():
        raise UserError("folder not found", path=folder, fix=f"correct {key} (relative paths start at the repository root)")


def find_cases(spec: FolderSpec) -> tuple[list[Case], list[UserError]]:
    """The cases (image, mask and group of every id, sorted by id) and every problem found on the way.

    A missing folder or one without any matching image raises at once (nothing else can be said).
    """
    _check_folder(spec.images, spec.key("images"))
    _check_folder(spec.masks, spec.key("masks"))
    shared = spec.images.resolve() == spec.masks.resolve() and spec.image_pattern != spec.mask_pattern
    mask_regex = compile_pattern(spec.mask_pattern, spec.key("mask_pattern"))
    images = _matches(spec.images, spec.image_pattern, spec.key("image_pattern"), mask_regex if shared else None)
    masks = _matches(spec.masks, spec.mask_pattern, spec.key("mask_pattern"))
    if not images:
        present = list_files(spec.images, spec.image_pattern.count("/") + 1)
        held = f"it holds {len(present)} files, e.g. {_shown(present[:3])}" if present else "it holds no files"
        raise UserError(f"no file matches image_pattern {spec.image_pattern!r} ({held})", path=spec.images,
                        fix=f"put the images there or correct {spec.key('image_pattern')}")
    problems: list[UserError] = []
    for found, folder, what, key in ((images, spec.images, "image", "image_pattern"),
                                     (masks, spec.masks, "mask", "mask_pattern")):
        for id_, files in found.items():
            if len(files) > 1:
                problems.append(UserError(
                    f"duplicate id {id_!r}: {_shown(files)} all match {what} pattern {getattr(spec, key)!r}",
                    path=folder / files[0],
                    fix=f"give every case one {what} file: make {spec.key(key)} tell them apart (e.g. put the "
                        "distinguishing folder into {id}) or remove the extra files"))
        unsupported = [f for files in found.values() for f in files
                       if suffix(Path(f)) not in IMAGE_SUFFIXES + VOLUME_SUFFIXES]
        if unsupported:
            problems.append(UserError(f"unsupported file types: {_shown(unsupported)}", path=folder / unsupported[0],
                                      fix="use PNG, JPEG, TIFF, BMP, NIfTI (.nii, .nii.gz) or HDF5 (.h5, .hdf5) files"))
    no_mask = sorted(set(images) - set(masks))
    if no_mask:
        expected = spec.masks / spec.mask_pattern.replace("{id}", no_mask[0])
        problems.append(UserError(
            f"{len(no_mask)} files have no mask: {_shown(images[i][0] for i in no_mask)} (expected e.g. {expected})",
            path=spec.images, fix=f"add the missing masks or remove these files (or correct {spec.key('mask_pattern')})"))
    no_image = sorted(set(masks) - set(images))
    if no_image:
        problems.append(UserError(
            f"{len(no_image)} files have no image: {_shown(masks[i][0] for i in no_image)}", path=spec.masks,
            fix=f"add the missing images or remove these files (or correct {spec.key('image_pattern')})"))
    ids = sorted(set(images) & set(masks))
    groups, group_problems = group_ids(ids, spec)
    cases = [Case(i, spec.images / images[i][0], spec.masks / masks[i][0], groups.get(i, i)) for i in ids]
    return cases, problems + group_problems


def group_ids(ids: list[str], spec: FolderSpec) -> tuple[dict[str, str], list[UserError]]:
    """id -> group by the `group` regular expression (every id its own group without one)."""
    if not spec.group or not ids:
        return {i: i for i in ids}, []
    fix = (f"correct {spec.key('group')}: a regular expression searched in each id whose first group (or whole "
           "match) is the patient, e.g. '^(patient\\d+)_'")
    try:
        regex = re.compile(spec.group)
    except re.error as exc:
        raise UserError(f"group pattern {spec.group!r} is not a regular expression ({exc})", fix=fix) from exc
    groups = {}
    for i in ids:
        m = regex.search(i)
        if m and (g := m.group(1) if regex.groups else m.group(0)):
            groups[i] = g
    unmatched = [i for i in ids if i not in groups]
    if not groups:
        return {}, [UserError(f"the group pattern {spec.group!r} matches none of the {len(ids)} ids "
                              f"(e.g. {_shown(ids[:3])})", path=spec.images, fix=fix)]
    if unmatched:
        return groups, [UserError(f"{len(unmatched)} ids do not match the group pattern {spec.group!r}: "
                                  f"{_shown(unmatched)}", path=spec.images, fix=fix)]
    return groups, []


def read_id_list(path: Path, key: str) -> list[str]:
    """The ids of a split list: one per line, blank lines and `#` comments ignored."""
    if not path.is_file():
        raise UserError("split list not found", path=path, fix=f"correct {key} (a text file with one case id per line)")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def assign_split(cases: list[Case], spec: FolderSpec) -> dict[str, str]:
    """case id -> 'train' | 'val', whole groups on one side; UserErrors for anything inconsistent."""
    from .split import split_ids

    if isinstance(spec.split, dict):
        side = _listed_split(cases, spec)
    else:
        train, _ = split_ids([c.group for c in cases], spec.split, spec.seed)
        train = set(train)
        side = {c.id: "train" if c.group in train else "val" for c in cases}
    for wanted in ("train", "val"):
        if wanted not in side.values():
            raise UserError(f"the split leaves the {'training' if wanted == 'train' else 'validation'} set empty "
                            f"({len({c.group for c in cases})} groups in all)", path=spec.images,
                            fix=f"add data or change {spec.key('split')}")
    return side


def _listed_split(cases: list[Case], spec: FolderSpec) -> dict[str, str]:
    lists = {s: read_id_list(spec.split[s], f"{spec.key('split')}.{s}") for s in ("train", "val")}
    known = {c.id for c in cases}
    for s, ids in lists.items():
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise UserError(f"{len(unknown)} listed ids have no image/mask pair: {_shown(unknown)}", path=spec.split[s],
                            fix="remove them from the list or add their files")
    both = sorted(set(lists["train"]) & set(lists["val"]))
    if both:
        raise UserError(f"{len(both)} ids are in both the train and the val list: {_shown(both)}", path=spec.split["val"],
                        fix="list each case once")
    side = {i: s for s, ids in lists.items() for i in ids}
    unlisted = [c.id for c in cases if c.id not in side]
    if unlisted:
        raise UserError(f"{len(unlisted)} cases are in neither list: {_shown(unlisted)}", path=spec.split["train"],
                        fix="add each case to the train or the val list (or remove its files)")
    sides: dict[str, set] = {}
    for c in cases:
        sides.setdefault(c.group, set()).add(side[c.id])
    split_groups = sorted(g for g, s in sides.items() if len(s) > 1)
    if split_groups:
        raise UserError(f"{len(split_groups)} groups have cases in both lists: {_shown(split_groups)}",
                        path=spec.split["val"], fix="keep all cases of a patient in one list")
    return side
