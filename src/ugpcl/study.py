"""The experiment matrix of params.yaml turned into distinct training runs.

A run is (dataset, labeled regime, method, method overrides); each is trained once per seed,
however many tables it appears in. Its id names what differs from the method's defaults, so
Table 1 UGPCL on ACDC-136, Table 2 row 7 and Table 3 conv2 are the same id. A dataset is any
entry of `data:` (config.dataset_names): Table 1's methods x regimes x seeds run on every dataset
listed in `experiments.table1.datasets`, and Tables 2 and 3 on the one they name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import (DEFAULT_CONFIG, Origins, changed_keys, dataset_config, dataset_kind, dataset_names, deep_merge,
                     merged, other_profile, parse_override, profiles_of, read_yaml, resolve, results_dir)
from .data.demo import demo_settings
from .data.prepared import FORMAT_VERSION
from .errors import UserError
from .lifetime import workflow_job
from .methods import check_config, parse_hparams

SHORT = {"consistency_loss": "con", "equivariance_loss": "eqv", "embed_stage": "embed"}


@dataclass
class Run:
    dataset: str
    regime: str
    method: str
    overrides: dict = field(default_factory=dict)   # only keys that differ from the defaults
    tables: list[str] = field(default_factory=list)  # e.g. ["table1", "table2:7", "table3:conv2"]

    @property
    def id(self) -> str:
        parts = [f"{self.dataset}{self.regime}", self.method]
        for key in sorted(self.overrides):
            value = self.overrides[key]
            name = SHORT.get(key, key)
            if isinstance(value, bool):
                parts.append(name if value else f"no{name}")
            else:
                parts.append(f"{name}-{value}")
        return "_".join(parts)

    def config(self, cfg: dict, seed: int | None = None) -> dict:
        """The configuration this run trains with."""
        out = deep_merge(cfg, {"methods": {self.method: self.overrides}})
        if seed is not None:
            out["train"]["seed"] = seed
        return out

    def run_dir(self, cfg: dict, seed: int) -> Path:
        return results_dir(cfg) / "runs" / self.id / f"seed{seed}"


# --- what a job depends on: the rerun triggers of Snakemake (params) and DVC (params) -----------
def dataset_settings(cfg: dict, name: str) -> dict:
    """Everything preparing dataset `name` reads from the configuration: its `data:` entry,
    `data.image_size`, for a demo source the demo generator's settings of its kind, and the
    prepared file's format version (a new format rebuilds the file)."""
    entry = dataset_config(cfg, name)
    out = {"dataset": name, "image_size": cfg["data"]["image_size"], "entry": entry, "format": FORMAT_VERSION}
    if entry.get("source") == "demo":
        out["demo"] = demo_settings(cfg["data"]["demo"], dataset_kind(cfg, name))
    return out


def run_settings(cfg: dict, run: Run, seed: int) -> dict:
    """Everything run `run` trains and is evaluated with at `seed`: its own method's
    hyper-parameters (with the run's overrides), the shared `model:`, `train:` (the seed
    included) and `evaluation:` settings, and its dataset's settings. Nothing of another
    method or dataset: changing those leaves this run alone."""
    trained = run.config(cfg, seed)
    return {"method": run.method, "hparams": trained["methods"][run.method], "regime": run.regime,
            "model": trained["model"], "train": trained["train"], "evaluation": trained["evaluation"],
            "data": dataset_settings(trained, run.dataset)}


def settings_digest(settings: dict) -> str:
    """A short, stable digest of `settings` (what the workflows compare to decide a rerun)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]



def settings_changes(trained: dict, wanted: dict, run: Run, seed: int) -> list[tuple[str, object, object]]:
    """Where the configuration `trained` (a finished run's config.yaml) and `wanted` differ in
    what run `run` at `seed` trains with (`run_settings`, the workflows' rerun trigger): (key as
    params.yaml names it, value in `trained`, value in `wanted`), sorted by key."""
    names = {"hparams": f"methods.{run.method}", "data.entry": f"data.{run.dataset}"}

    def key_name(key: str) -> str:
        for inner, outer in names.items():
            if key == inner or key.startswith(inner + "."):
                return outer + key[len(inner):]
        return key

    changes = changed_keys(run_settings(trained, run, seed), run_settings(wanted, run, seed))
    return sorted(((key_name(k), old, new) for k, old, new in changes), key=lambda change: change[0])


def load_study(path: str | Path | None = None, profile: str | None = None, overrides: list[str] = ()) -> dict:
    """params.yaml with the profile and overrides merged in, fully checked before anything runs:
    the schema, every method's hyper-parameters (against its HParams) and the experiment matrix; and
    the keys every other profile writes (`check_study`, `config.check_other_profiles`)."""
    source = Path(path) if path else DEFAULT_CONFIG
    raw = read_yaml(source)
    cfg = resolve(raw, profile, overrides, source)
    try:
        check_study(cfg, source, raw, overrides)
    except UserError as err:
        origin = _override_of(err.key, overrides)
        if origin is None:
            raise
        raise UserError(f"--set {origin}: {err.message}", fix=f"correct this override: {err.fix}") from None
    return cfg


def _override_of(key: list[str] | None, overrides: list[str]) -> str | None:
    """The last `--set` override that wrote configuration key `key`, a key above it or one below it."""
    for text in reversed(list(overrides) if key else []):
        keys = parse_override(text)[0]
        if keys[:len(key)] == key or key[:len(keys)] == keys:
            return text
    return None


def check_study(cfg: dict, source="params.yaml", raw: dict | None = None, overrides: list[str] = ()) -> None:
    """The checks of `load_study` on an already resolved configuration (the Snakefile's). With `raw`, the
    file as read (profiles and all), an error names the key where the file writes it (under
    profiles.NAME where the profile in force sets it), and every other profile's method sections and
    paired-tests reference are checked too (its UserError has no `key`: no --set of this command wrote it)."""
    origins = Origins(raw, cfg["profile"], [parse_override(o)[0] for o in overrides]) if raw is not None else None
    check_config(cfg, source, origins.written if origins else None)
    for run in distinct_runs(cfg, source):
        try:
            parse_hparams(run.config(cfg), run.method, source)  # with the overrides of Table 2/3 rows
        except UserError as err:
            raise _at_the_row(err, cfg, run, source, origins) from None
    check_paired_with(cfg, source, origins)
    for name, section in profiles_of(raw, source).items() if raw is not None and not workflow_job() else ():
        if name == cfg["profile"]:  # (a workflow's jobs leave the other profiles to the workflow: config.resolve)
            continue
        other, cfg_other = Origins(raw, name), merged(raw, name)
        try:
            if "methods" in (section or {}):  # else it takes the base's sections, checked above
                check_config(cfg_other, source, other.written)
            check_paired_with(cfg_other, source, other)
        except UserError as err:
            if err.key is not None and (other.in_profile(err.key) or err.key == PAIRED_WITH
                                        and other.in_profile(TABLE1_METHODS)):  # else a key of the base
                raise UserError(f"{other_profile(name)}: {err.message}", path=source, fix=err.fix) from None


PAIRED_WITH = ["experiments", "table1", "paired_with"]
TABLE1_METHODS = ["experiments", "table1", "methods"]


def _at_the_row(err: UserError, cfg: dict, run: Run, source, origins: Origins | None = None) -> UserError:
    """A hyper-parameter error caused by a Table 2 row's or Table 3 stage's override, named where the
    matrix writes it (experiments.table2.rows[i].overrides.KEY, under profiles.NAME where the profile in
    force writes the rows), not as methods.METHOD.KEY, where the file has no such value; other errors as
    they are."""
    key = err.key or []
    if len(key) != 3 or key[:2] != ["methods", run.method] or key[2] not in run.overrides:
        return err
    exp, name = cfg["experiments"], key[2]
    for tag in run.tables:
        table, _, which = tag.partition(":")
        if table == "table2":
            index = next(i for i, row in enumerate(exp["table2"]["rows"]) if str(row["row"]) == which)
            where, written = (f"experiments.table2.rows[{index}] (row {which}).overrides.{name}",
                              ["experiments", "table2", "rows", str(index), "overrides", name])
        elif table == "table3" and name == "embed_stage":
            where, written = (f"experiments.table3.stages ({which})", ["experiments", "table3", "stages"])
        else:
            continue
        if origins is not None and origins.in_profile(written[:3]):
            where = f"profiles.{origins.profile}.{where}"
        return UserError(err.message.replace(f"methods.{run.method}.{name}", where, 1), path=source,
                         fix=err.fix, key=written)
    return err


def check_paired_with(cfg: dict, source="params.yaml", origins: Origins | None = None) -> None:
    """`experiments.table1.paired_with`, the method the report's paired tests compare with every other
    method of a Table 1 setting, must be one of `experiments.table1.methods` (unless Table 1 trains none):
    a method that is not trained would leave the report without any paired test, silently. Where the
    profile `origins` names writes Table 1's methods (or the key), the key is named in that profile:
    setting it at the top level would change the paper profile's comparison too."""
    table1 = cfg["experiments"]["table1"]
    methods, wanted = table1["methods"], table1["paired_with"]
    if not methods or wanted in methods:
        return
    in_profile = origins is not None and (origins.in_profile(PAIRED_WITH) or origins.in_profile(TABLE1_METHODS))
    where = ".".join((["profiles", origins.profile] if in_profile else []) + PAIRED_WITH)
    listed = ".".join(origins.written(TABLE1_METHODS) if origins is not None else TABLE1_METHODS)
    raise UserError(
        f"{where} is {wanted!r}, which is not one of {listed} ({', '.join(methods)}): the report's paired tests "
        "compare that method with every other method of each Table 1 setting",
        path=source, key=PAIRED_WITH,
        fix=f"set {where} to one of {', '.join(methods)}" + (" (the paper's comparison: ugpcl)" if "ugpcl" in methods
                                                              else ""),
    )


def _make(cfg: dict, dataset: str, regime: str, method: str, overrides: dict | None, tag: str,
          source="params.yaml") -> Run:
    if method not in cfg["methods"]:
        raise UserError(f"experiments: {tag} uses method {method!r}, which has no section under methods:",
                        path=source, fix=f"use one of {', '.join(cfg['methods'])}")
    defaults = cfg["methods"][method]
    unknown = set(overrides or {}) - set(defaults)
    if unknown:
        raise UserError(
            f"experiments: {tag} overrides unknown {method} keys {sorted(unknown)}",
            path=source,
            fix=f"use keys of methods.{method}",
        )
    diff = {k: v for k, v in (overrides or {}).items() if defaults[k] != v}
    return Run(dataset, str(regime), method, diff, [tag])


def distinct_runs(cfg: dict, source="params.yaml") -> list[Run]:
    """Every distinct run of Tables 1-3, in table order, each listing the tables it serves."""
    exp = cfg["experiments"]
    wanted: list[Run] = []
    for dataset, regimes in exp["table1"]["datasets"].items():
        for regime in regimes:
            for method in exp["table1"]["methods"]:
                wanted.append(_make(cfg, dataset, regime, method, None, "table1", source))
    t2 = exp["table2"]
    for row in t2["rows"]:
        wanted.append(_make(cfg, t2["dataset"], t2["regime"], row["method"], row.get("overrides"),
                            f"table2:{row['row']}", source))
    t3 = exp["table3"]
    for stage in t3["stages"]:
        wanted.append(_make(cfg, t3["dataset"], t3["regime"], "ugpcl", {"embed_stage": stage}, f"table3:{stage}",
                            source))

    by_id: dict[str, Run] = {}
    for run in wanted:
        same = by_id.get(run.id)
        if same is None:
            by_id[run.id] = run
        elif (same.dataset, same.regime) != (run.dataset, run.regime):
            raise UserError(
                f"experiments: dataset {same.dataset!r} regime {same.regime!r} and dataset {run.dataset!r} regime "
                f"{run.regime!r} give the same run id {run.id!r}",
                path=source, fix="rename one of the datasets or regimes (e.g. end a dataset name with a letter)",
            )
        else:
            same.tables.extend(run.tables)
    for run in by_id.values():
        if run.dataset not in dataset_names(cfg):
            raise UserError(
                f"experiments use dataset {run.dataset!r}, which has no entry under data: "
                f"(configured: {', '.join(dataset_names(cfg))})",
                path=source, fix=f"add data.{run.dataset} (README, 'Your own data') or correct the experiment matrix",
            )
        regimes = cfg["data"][run.dataset]["regimes"]
        if run.regime not in regimes:
            keys = dict.fromkeys(f"experiments.table1.datasets.{run.dataset}" if tag == "table1"
                                 else f"experiments.{tag.split(':')[0]}.regime" for tag in run.tables)
            raise UserError(
                f"experiments use regime {run.regime!r} of {run.dataset}, which data.{run.dataset}.regimes lacks "
                f"(it has {', '.join(map(repr, regimes))})",
                path=source,
                fix=f"add {run.regime!r} under data.{run.dataset}.regimes (and prepare {run.dataset} again), or use "
                    f"one of its regimes in {' and '.join(keys)}",
            )
    return list(by_id.values())


def find_run(cfg: dict, run_id: str) -> Run:
    for run in distinct_runs(cfg):
        if run.id == run_id:
            return run
    raise UserError(f"no run {run_id!r} in the experiment matrix", fix="list them with `ugpcl runs`")
