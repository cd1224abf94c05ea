"""The report against the paper, from fake finished runs; the figures, from tiny real networks."""

import csv
from datetime import datetime, timezone
import io
import json
from dataclasses import dataclass
import html as html_module
import re
from html.parser import HTMLParser

import h5py
import matplotlib.image
from matplotlib.container import ErrorbarContainer
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ugpcl.config import load_config, prepared_path
from ugpcl.data.prepared import write_prepared
from ugpcl.engine.checkpoint import save_method
from ugpcl.methods import build_method
from ugpcl import choices
from ugpcl.report import figures, html, stamp, tables
from ugpcl.report.build import list_runs, write_report
from ugpcl.study import find_run


def make_cfg(tmp_path, profile="paper", *overrides):
    return load_config(profile=profile, overrides=[f"paths.results={tmp_path}/results",
                                                   f"paths.reports={tmp_path}/reports", *overrides])


CASE_OFFSETS = (-0.025, -0.015, -0.005, 0.005, 0.015, 0.025)  # per validation case, around the run's Dice
CLASS_OFFSETS = {"acdc": {"RV": -0.03, "Myo": -0.02, "LV": 0.05}, "isic": {"lesion": 0.0}}


def per_case_rows(dataset, dice, spread):
    """per_case.csv rows: six cases whose class scores average to `dice`; `spread` scales how the cases differ."""
    classes = CLASS_OFFSETS["acdc" if dataset.startswith("acdc") else "isic"]
    return [{"case": f"case{i}", "class": name, "dice": dice + spread * off + shift, "jaccard": dice - 0.1,
             "hd95": 4.5, "hd95_medpy": 3.5, "asd": 1.2, "pred_voxels": 10, "truth_voxels": 10, "network": "model"}
            for i, off in enumerate(CASE_OFFSETS) for name, shift in classes.items()]


def fake_run(cfg, run_id, seed, dice, jaccard=None, status="finished", last=None, net2=None, spread=1.0):
    """A run directory as `ugpcl train` leaves it (no checkpoints); the last iteration scores
    `last` (default: 2 Dice points below the best), a second network `net2`; six validation cases
    in per_case.csv whose Dice differ by `spread` times CASE_OFFSETS."""
    run = find_run(cfg, run_id)
    run_dir = run.run_dir(cfg, seed)
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "eval-last").mkdir(parents=True)
    info = {"run_id": run_id, "method": run.method, "dataset": run.dataset, "regime": run.regime, "seed": seed,
            "profile": cfg["profile"], "overrides": run.overrides, "device": "cuda", "device_name": "NVIDIA H100",
            "iterations": 6000, "wall_time_s": 3725.0, "started": "2026-01-01T00:00:00+00:00",
            "finished": "2026-01-01T01:02:05+00:00", "git_commit": "0123456789abcdef", "data_source": "official",
            "protocol": "volume", "status": status}
    (run_dir / "run.json").write_text(json.dumps(info))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(run.config(cfg, seed)))   # as `ugpcl train` writes it
    jaccard = dice - 0.1 if jaccard is None else jaccard
    rows = per_case_rows(run.dataset, dice, spread)
    with (run_dir / "eval" / "per_case.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    per_class = {name: {"dice": dice + shift, "jaccard": jaccard + shift, "hd95": 4.5 + 10 * shift,
                        "hd95_medpy": 3.5 + 10 * shift, "asd": 1.2, "empty_predictions": 0}
                 for name, shift in CLASS_OFFSETS["acdc" if run.dataset.startswith("acdc") else "isic"].items()}
    summary = {"dice": dice, "jaccard": jaccard, "hd95": 4.5, "hd95_medpy": 3.5, "asd": 1.2, "per_class": per_class,
               "n_cases": 20, "empty_predictions": 0, "method": run.method, "dataset": run.dataset,
               "regime": run.regime, "seed": seed, "checkpoint": "best", "protocol": "volume", "distance_unit": "mm"}
    if net2 is not None:
        summary["networks"] = {"model": {"dice": dice}, "model2": {"dice": net2}}
    (run_dir / "eval" / "summary.json").write_text(json.dumps(summary))
    last = dice - 0.02 if last is None else last
    last_summary = {**summary, "dice": last, "jaccard": jaccard - 0.02, "checkpoint": "last"}
    (run_dir / "eval-last" / "summary.json").write_text(json.dumps(last_summary))
    log = [{"t": t, "lr": 0.01, "loss": 1.0 / (t + 1), "sup": 0.5 / (t + 1)} for t in range(10)]
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (run_dir / "val.jsonl").write_text("".join(json.dumps({"t": t, "val_dice": 0.5 + t / 100}) + "\n" for t in (4, 9)))
    return run_dir


def cell(cells, **labels):
    (match,) = [c for c in cells if all(str(c.labels[k]) == str(v) for k, v in labels.items())]
    return match


def test_cells_compare_ours_with_the_paper(tmp_path):
    cfg = make_cfg(tmp_path)
    fake_run(cfg, "acdc136_ugpcl", 1337, 0.8911, 0.7815)   # paper 88.11 / 79.15
    fake_run(cfg, "acdc68_mt", 1337, 0.7000)               # paper 74.20
    fake_run(cfg, "isic181_cps", 1337, 0.8100)             # paper 78.09
    fake_run(cfg, "isic91_em", 1337, 0.6811)               # paper 66.11: exactly the tolerance above
    fake_run(cfg, "acdc136_mt", 1337, 0.90, status="running")
    cells = tables.build_tables(cfg, tables.collect_results(cfg))

    ugpcl = cell(cells["table1"], dataset="acdc", labeled="136", method="ugpcl")
    assert ugpcl.row()["dice"] == pytest.approx(89.11)
    assert ugpcl.row()["dice_paper"] == pytest.approx(88.11)
    assert ugpcl.row()["dice_diff"] == pytest.approx(1.0)
    assert ugpcl.row()["jaccard_diff"] == pytest.approx(-1.0)
    assert ugpcl.verdict == "matches"
    assert cell(cells["table1"], dataset="acdc", labeled="68", method="mt").verdict == "below"
    assert cell(cells["table1"], dataset="isic", labeled="181", method="cps").verdict == "above"
    assert cell(cells["table1"], dataset="isic", labeled="91", method="em").verdict == "matches"
    # a run that has not finished is missing, and so is one never started; nothing is filled in
    for method in ("mt", "supervised"):
        unfinished = cell(cells["table1"], dataset="acdc", labeled="136", method=method)
        assert unfinished.verdict == "missing" and unfinished.row()["dice"] is None
    # the one shared run fills Table 1, Table 2 row 7 and Table 3 conv2
    for shared in (cell(cells["table2"], row=7), cell(cells["table3"], feature="conv2")):
        assert shared.run_id == "acdc136_ugpcl" and shared.dice_mean == pytest.approx(89.11)
    assert cell(cells["table3"], feature="conv2").paper_dice == pytest.approx(88.11)
    assert len(cells["table1"]) == 32 and len(cells["table2"]) == 7 and len(cells["table3"]) == 4

    rows = tables.display_rows(cells["table1"])
    shown = [r for r in rows if r["run"] == "acdc136_ugpcl"][0]
    shown = [shown[k] for k in ("Dice ours", "Dice last", "Dice paper", "Δ Dice", "verdict", "HD95 (medpy)")]
    assert shown == ["89.11 ± –", "87.11 ± –", "88.11", "+1.00", "matches", "3.50 ± – mm"]
    assert "Dice net 2" not in rows[0]  # no run of this table has a second network yet
    assert [r for r in rows if r["run"] == "acdc68_supervised"][0]["Dice ours"] == "missing"


def test_mean_and_std_over_seeds(tmp_path):
    cfg = make_cfg(tmp_path, "paper", "experiments.seeds=[1, 2]")
    fake_run(cfg, "acdc68_ugpcl", 1, 0.80)
    fake_run(cfg, "acdc68_ugpcl", 2, 0.84)
    fake_run(cfg, "acdc68_cps", 1, 0.75)
    cells = tables.build_tables(cfg, tables.collect_results(cfg))
    both = cell(cells["table1"], dataset="acdc", labeled="68", method="ugpcl")
    assert both.row()["dice"] == pytest.approx(82.0)
    assert both.row()["dice_std"] == pytest.approx(2.83, abs=0.005)
    assert both.row()["dice_diff"] == pytest.approx(82.0 - 80.05)
    one = [r for r in tables.display_rows(cells["table1"]) if r["run"] == "acdc68_cps"][0]
    assert one["seeds"] == "1/2" and one["Dice ours"] == "75.00 ± –"
    shown = [r for r in tables.display_rows(cells["table1"]) if r["run"] == "acdc68_ugpcl"][0]
    assert shown["Dice ours"] == "82.00 ± 2.83"


def test_a_seed_whose_hd95_is_undefined_is_not_averaged_away(tmp_path):
    """A seed that never predicts a class has no HD95 (metrics.summarise gives null): the row says
    so instead of averaging the other seeds, while its Dice counts. Empty predictions, which HD95
    leaves out and which would flatter it, are counted in the row."""
    cfg = make_cfg(tmp_path, "paper", "experiments.seeds=[1, 2]")
    fake_run(cfg, "acdc68_mt", 1, 0.80)
    fake_run(cfg, "acdc68_mt", 2, 0.60)
    summary_file = find_run(cfg, "acdc68_mt").run_dir(cfg, 2) / "eval" / "summary.json"
    summary = json.loads(summary_file.read_text())
    summary.update(hd95_medpy=None, empty_predictions=20)
    summary["per_class"]["RV"].update(hd95_medpy=None, empty_predictions=20)
    summary_file.write_text(json.dumps(summary))
    fake_run(cfg, "acdc68_cps", 1, 0.75)
    fake_run(cfg, "acdc68_cps", 2, 0.77)
    cells = tables.build_tables(cfg, tables.collect_results(cfg))
    mt = cell(cells["table1"], dataset="acdc", labeled="68", method="mt")
    assert mt.row()["dice"] == pytest.approx(70.0)
    assert mt.row()["hd95"] is None and mt.row()["hd95_std"] is None
    assert (mt.row()["hd95_undefined_seeds"], mt.row()["empty_predictions"]) == (1, 20)
    rows = {r["run"]: r for r in tables.display_rows(cells["table1"])}
    assert rows["acdc68_mt"]["HD95 (medpy)"] == "undefined in 1 of 2 seeds; 20 empty predictions left out"
    assert rows["acdc68_cps"]["HD95 (medpy)"] == "3.50 ± 0.00 mm"
    per_class = {r["RV HD95"] for r in tables.per_class_rows([mt], ["RV"])}
    assert per_class == {"undefined in 1 of 2 seeds"}
    csv_rows = [r for r in csv.DictReader(io.StringIO(tables.per_class_csv([mt]))) if r["class"] == "RV"]
    assert {r["metric"]: r["mean"] for r in csv_rows} == {"Dice": "67.0", "Jaccard": "57.0", "HD95": "", "ASD": "1.2"}


def test_headline_checkpoint_and_second_network(tmp_path):
    cfg = make_cfg(tmp_path, "paper", "evaluation.checkpoint=last", "evaluation.hd95=monai")
    fake_run(cfg, "acdc136_cps", 1337, 0.86, last=0.84, net2=0.85)
    fake_run(cfg, "acdc136_mt", 1337, 0.80, last=0.81)
    cells = tables.build_tables(cfg, tables.collect_results(cfg))
    cps = cell(cells["table1"], dataset="acdc", labeled="136", method="cps")
    assert cps.dice == [pytest.approx(84.0)] and cps.other == "best" and cps.other_dice == [pytest.approx(86.0)]
    assert cps.row()["dice_best"] == pytest.approx(86.0) and cps.row()["dice_net2"] == pytest.approx(85.0)
    assert cps.hd95 == [4.5]  # MONAI's definition
    rows = {r["run"]: r for r in tables.display_rows(cells["table1"], "monai")}
    assert rows["acdc136_cps"]["Dice ours"] == "84.00 ± –" and rows["acdc136_cps"]["Dice best"] == "86.00 ± –"
    assert rows["acdc136_cps"]["Dice net 2"] == "85.00 ± –" and rows["acdc136_mt"]["Dice net 2"] == ""
    assert rows["acdc136_mt"]["HD95 (monai)"] == "4.50 ± – mm"
    note = tables.columns_note(cfg)  # says which definition once, in words
    assert "Dice/Jaccard ours: the last iteration's network" in note and note.count("MONAI") == 1
    assert "HD95 (monai): the larger of the two directed 95th percentiles" in note


def test_cells_left_out_of_the_matrix_read_not_run(tmp_path):
    cfg = make_cfg(tmp_path, "paper", "experiments.table1.methods=[supervised, ugpcl]")
    cells = tables.build_tables(cfg, tables.collect_results(cfg))
    mt = cell(cells["table1"], dataset="acdc", labeled="68", method="mt")
    assert mt.run_id is None and mt.verdict == "not run" and mt.paper_dice == pytest.approx(74.20)


def test_bad_paper_table_is_a_user_error(tmp_path):
    (tmp_path / "table1.csv").write_text("method,dice\nmt,1\n")
    with pytest.raises(Exception, match="table1.csv.*columns"):
        tables.read_paper_table("table1", tmp_path)


class TagChecker(HTMLParser):
    """Collects tag ids and image sources, and checks that every element is closed in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.ids, self.images, self.errors = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_report_files(tmp_path):
    cfg = make_cfg(tmp_path, "paper", "experiments.seeds=[1, 2]")
    fake_run(cfg, "acdc136_ugpcl", 1, 0.88)
    fake_run(cfg, "acdc136_ugpcl", 2, 0.90)
    fake_run(cfg, "isic91_supervised", 1, 0.60)
    files = write_report(cfg)

    # dvc metrics show: a headline (how many cells match) and a file per table row, a key per setting
    assert json.loads(files["metrics"].read_text()) == {"matching": 3, "compared": 43, "missing": 39}
    rows_dir = tables.metrics_dir(cfg)
    ugpcl = json.loads((rows_dir / "table1" / "ugpcl.json").read_text())
    assert ugpcl == {"acdc-68": None, "acdc-136": pytest.approx(89.0), "isic-91": None, "isic-181": None}
    for name in ("table2/row7", "table3/conv2"):
        assert json.loads((rows_dir / f"{name}.json").read_text()) == {"acdc-136": pytest.approx(89.0)}
    assert len(list(rows_dir.rglob("*.json"))) == 8 + 7 + 4

    with files["table1_csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 32
    row = [r for r in rows if r["run"] == "isic91_supervised"][0]
    shown = [row[k] for k in ("dice", "dice_paper", "dice_diff", "verdict", "seeds")]
    assert shown == ["60.0", "67.02", "-7.02", "below", "1"]
    assert row["dice_last"] == "58.0" and row["hd95"] == "3.5" and row["hd95_unit"] == "mm"
    md = files["table1_md"].read_text()
    assert "| isic | 91 | supervised | isic91_supervised | 1/2 | 60.00 ± – | 58.00 ± – | 67.02 | -7.02 | below |" in md
    assert ("| acdc | 136 | ugpcl | acdc136_ugpcl | 2/2 | 89.00 ± 1.41 | 87.00 ± 1.41 | 88.11 | +0.89 | matches |"
            in md)
    assert "Dice/Jaccard last: the last iteration" in md and "HD95 (medpy)" in md
    size = cfg["data"]["image_size"]
    assert f"ACDC in 3D per volume at the original resolution (SSL4MIS), ISIC per image at {size} px" in md
    assert "SYNTHETIC" not in md
    for name in ("table2_md", "table3_md"):
        assert "acdc136_ugpcl" in files[name].read_text()
    # Table 2's row 6 runs the authors' `pseudo` branch, which its paper columns do not say
    assert "labeled ones included, so no ground truth enters its contrast" in files["table2_md"].read_text()

    page = files["html"].read_text()
    checker = TagChecker()
    checker.feed(page)
    assert page.startswith("<!DOCTYPE html>") and checker.errors == [] and checker.stack == []
    assert {"table1", "table2", "table3", "settings", "choices", "runs", "verdict", "per-class-acdc-136",
            "run-acdc136_ugpcl"} <= set(checker.ids)
    assert checker.images and all(src.startswith("data:image/png;base64,") for src in checker.images)
    assert "SYNTHETIC" not in page
    assert "Row 6, contrast: pseudo, contrasts pixels labeled by the CNN head" in page
    # every run links to its folder, configuration and logs, relative to the page; the tables to the run
    assert 'href="../../results/paper/runs/acdc136_ugpcl/seed1/"' in page
    assert 'href="../../results/paper/runs/acdc136_ugpcl/seed1/config.yaml"' in page
    assert 'href="../../results/paper/runs/acdc136_ugpcl/seed2/log.jsonl"' in page
    assert page.count('href="#run-acdc136_ugpcl"') == 3   # Table 1, Table 2 row 7, Table 3 conv2
    assert "1 of the 43 cells" not in page and "3 of the 43 cells with a paper value are within ±2" in page
    assert "NVIDIA H100" in page and "1:02:05" in page           # device and wall time of a run
    assert "train.min_lr" in page and "train.iterations" in page  # paper-vs-code choices in force


def test_demo_report_says_it_is_synthetic(tmp_path):
    cfg = make_cfg(tmp_path, "demo")
    files = write_report(cfg)
    assert tables.SYNTHETIC_WARNING in files["html"].read_text()
    for table in tables.TABLES:
        assert files[f"{table}_md"].read_text().startswith(f"> **{tables.SYNTHETIC_WARNING}**")
    # Table 3's feature-map sides at the demo's 64 px, the paper's (at 224) beside them
    assert "| conv1 | 16 (paper: 56 at 224) |" in files["table3_md"].read_text()
    assert tables.stage_resolution("conv4", 224, {"resolution": "7"}) == "7"


def test_real_data_under_the_demo_profile_is_not_marked_synthetic():
    """The demo profile is a small model and a short run, not the data: a user's real datasets trained
    under it are not stamped SYNTHETIC, and one demo dataset in the study still marks it."""
    real = load_config(profile="demo", overrides=["data.acdc.source=official", "data.isic.source=official"])
    assert not tables.synthetic(real)
    assert tables.synthetic(load_config(profile="demo", overrides=["data.acdc.source=official"]))


def test_a_study_off_the_papers_set_up_says_so_beside_the_comparison(tmp_path):
    """Real data at other settings than the paper's Section 4.1 (here the demo profile's small model and
    120 iterations): the verdict and each table's Markdown name the settings; the paper profile has none."""
    assert choices.departures(make_cfg(tmp_path)) == []
    cfg = make_cfg(tmp_path, "demo", "data.acdc.source=official", "data.isic.source=official")
    said = choices.departures_text(cfg)
    assert said.startswith("Not the paper's set-up (its Section 4.1): data.image_size 64, the paper's 224; ")
    assert "model.pretrained false, the paper's true; train.iterations 120, the paper's 6000" in said
    files = write_report(cfg)
    for table in tables.TABLES:
        assert files[f"{table}_md"].read_text().startswith(f"> {said}\n")
    verdict = re.search(r'<p class="verdict" id="verdict">(.*?)</p>', files["html"].read_text(), re.S)[1]
    assert html_module.unescape(said) in html_module.unescape(verdict) and "SYNTHETIC" not in files["html"].read_text()


def test_list_runs_reports_status(tmp_path):
    cfg = make_cfg(tmp_path)
    fake_run(cfg, "acdc136_ugpcl", 1337, 0.88)
    fake_run(cfg, "acdc68_mt", 1337, 0.70, status="running")
    runs = {r["id"]: r for r in list_runs(cfg)}
    assert len(runs) == 40
    assert runs["acdc136_ugpcl"]["tables"] == ["table1", "table2:7", "table3:conv2"]
    assert runs["acdc136_ugpcl"]["seeds"]["1337"]["status"] == "finished"
    assert runs["acdc68_mt"]["seeds"]["1337"]["status"] == "started"
    assert runs["acdc68_cps"]["seeds"]["1337"]["status"] == "missing"


def test_runs_trained_with_other_settings_are_named_and_left_out_of_the_report(tmp_path, capsys):
    """A run trained by hand with `--set` into the matrix's folder, or before params.yaml changed, is not
    the configuration's: the report does not compare it with the paper, and says which keys differ."""
    from ugpcl.cli import main

    cfg = make_cfg(tmp_path)
    fake_run(cfg, "acdc136_ugpcl", 1337, 0.88)
    fake_run(cfg, "acdc136_mt", 1337, 0.86)
    fake_run(cfg, "acdc136_em", 1337, 0.84)
    mt = find_run(cfg, "acdc136_mt").run_dir(cfg, 1337)
    trained = find_run(cfg, "acdc136_mt").config(make_cfg(tmp_path, "paper", "train.iterations=300",
                                                           "methods.mt.ema_decay=0.9"), 1337)
    (mt / "config.yaml").write_text(yaml.safe_dump(trained))
    (find_run(cfg, "acdc136_em").run_dir(cfg, 1337) / "config.yaml").unlink()
    runs = {r["id"]: r for r in list_runs(cfg)}
    assert runs["acdc136_ugpcl"]["seeds"]["1337"]["status"] == "finished"
    assert runs["acdc136_mt"]["seeds"]["1337"] == {"status": "other settings", "dir": str(mt),
                                                   "settings": "methods.mt.ema_decay=0.9, train.iterations=300"}
    assert runs["acdc136_em"]["seeds"]["1337"]["settings"] == "unknown: config.yaml missing"

    files = write_report(cfg)
    table1 = files["table1_md"].read_text()
    assert "| acdc | 136 | ugpcl | acdc136_ugpcl | 1/1 | 88.00 ± – |" in table1
    assert "| acdc | 136 | mt | acdc136_mt | 0/1 | missing |" in table1 and "| 136 | em | acdc136_em | 0/1 |" in table1
    page = files["html"].read_text()
    assert ("<b>Left out:</b> 2 finished run-seeds trained with settings other than this configuration's (see Runs "
            "for the keys): acdc136_em seed 1337, acdc136_mt seed 1337.") in page
    assert "left out: trained with methods.mt.ema_decay=0.9, train.iterations=300" in page

    assert main(["runs", "--profile", "paper", "--set", f"paths.results={tmp_path}/results"]) == 0
    out = capsys.readouterr().out
    assert ("acdc136_mt seed 1337: finished with other settings than these (trained with methods.mt.ema_decay=0.9, "
            "train.iterations=300), left out of the report; `ugpcl train --run acdc136_mt --seed 1337 --force "
            f"--profile paper --set paths.results={tmp_path}/results` retrains it with these") in out


def test_runs_trained_on_a_prepared_file_made_again_since_are_left_out(tmp_path):
    """New masks, `ugpcl prepare` again: a run trained on the old file is not this configuration's
    (as `ugpcl evaluate` refuses it), so it is named and left out beside the runs trained on the new one."""
    import hashlib

    from ugpcl.config import prepared_path

    cfg = make_cfg(tmp_path)
    data = prepared_path(cfg, "acdc")
    data.parent.mkdir(parents=True)
    data.write_bytes(b"the prepared file, old masks")
    old = hashlib.sha256(data.read_bytes()).hexdigest()
    for run_id, dice in (("acdc136_ugpcl", 0.88), ("acdc136_mt", 0.86), ("acdc136_em", 0.84)):
        record = fake_run(cfg, run_id, 1337, dice) / "run.json"
        info = json.loads(record.read_text())
        if run_id != "acdc136_em":  # a run from before runs recorded their data: not known to differ
            info["data"] = {"path": str(data), "sha256": old}
        record.write_text(json.dumps(info))
    runs = {r["id"]: r["seeds"]["1337"] for r in list_runs(cfg)}
    assert all(runs[i]["status"] == "finished" for i in ("acdc136_ugpcl", "acdc136_mt", "acdc136_em"))
    data.write_bytes(b"the prepared file, new masks")
    new = hashlib.sha256(data.read_bytes()).hexdigest()
    ugpcl_run = find_run(cfg, "acdc136_ugpcl").run_dir(cfg, 1337) / "run.json"
    ugpcl_run.write_text(json.dumps({**json.loads(ugpcl_run.read_text()), "data": {"sha256": new}}))  # retrained
    runs = {r["id"]: r["seeds"]["1337"] for r in list_runs(cfg)}
    assert runs["acdc136_ugpcl"]["status"] == "finished" and runs["acdc136_em"]["status"] == "finished"
    assert runs["acdc136_mt"]["status"] == "other settings"
    assert runs["acdc136_mt"]["settings"] == f"data={old[:12]} (the prepared file is {new[:12]} now)"
    table1 = write_report(cfg)["table1_md"].read_text()
    assert "| acdc | 136 | mt | acdc136_mt | 0/1 | missing |" in table1
    assert "| acdc | 136 | ugpcl | acdc136_ugpcl | 1/1 | 88.00 ± – |" in table1


# --- figures ------------------------------------------------------------------------------
def prepared_acdc(cfg, acdc_dir, size):
    """A small prepared ACDC file from two real validation volumes, resized to `size`."""
    images, labels, cases = [], [], []
    for case in (acdc_dir / "val.list").read_text().split()[:2]:
        with h5py.File(acdc_dir / "data" / f"{case}.h5") as f:
            image, label = torch.from_numpy(f["image"][()]), torch.from_numpy(f["label"][()].astype(np.int64))
        images.append(F.interpolate(image[:, None].float(), size=(size, size), mode="bilinear", align_corners=False))
        labels.append(F.interpolate(label[:, None].float(), size=(size, size), mode="nearest")[:, 0])
        cases += [case] * len(image)
    images = torch.cat(images).numpy().astype(np.float32)
    labels = torch.cat(labels).numpy().astype(np.uint8)
    names = [f"{c}_slice_{i}" for i, c in enumerate(cases)]
    return write_prepared(
        prepared_path(cfg, "acdc"),
        dataset="acdc", class_names=["background", "RV", "Myo", "LV"], train_images=images, train_labels=labels,
        train_names=names, train_groups=cases, labeled={"136": np.arange(4)}, val_images=images, val_labels=labels,
        val_names=names, val_cases=cases, source="local")


def save_tiny_checkpoint(cfg, run_id, seed):
    """A real checkpoint of the run's own (untrained, demo-sized) networks, in the checkpoint format."""
    run = find_run(cfg, run_id)
    run_cfg = run.config(cfg, seed)
    info = {"run_id": run_id, "method": run.method, "dataset": "acdc", "regime": run.regime, "seed": seed,
            "profile": cfg["profile"], "num_classes": 4, "in_channels": 1}
    torch.manual_seed(seed)
    method = build_method(run_cfg, run.method, 4, 1)
    save_method(run.run_dir(cfg, seed) / "checkpoints" / "best.pt", method, run_cfg, info, 30)
    (run.run_dir(cfg, seed) / "config.yaml").write_text(yaml.safe_dump(run_cfg))   # as `ugpcl train` writes it


def test_pixel_sample_is_fixed_and_capped():
    grid = np.repeat(np.arange(4), [500, 30, 200, 5])
    first = figures.sample_pixels(grid, per_class=50)
    assert np.array_equal(first, figures.sample_pixels(grid, per_class=50))
    assert np.bincount(grid[first]).tolist() == [50, 30, 50, 5]


def test_slices_with_most_classes_are_picked():
    labels = np.zeros((6, 8, 8), np.uint8)
    labels[1, :2] = 1
    labels[3, :2], labels[3, 2:4], labels[3, 4:6] = 1, 2, 3
    labels[4, :2], labels[4, 2:4] = 2, 3
    assert figures.pick_slices(labels, 1).tolist() == [3]
    assert figures.pick_slices(labels, 2).tolist() == [3, 4]


def test_stage_features_match_downsampled_labels():
    cfg = load_config(profile="demo")
    run = find_run(cfg, "acdc136_ugpcl")
    method = build_method(run.config(cfg), "ugpcl", 4, 1)
    labels = np.zeros((2, 64, 64), np.uint8)
    labels[:, 32:, :32] = 2
    images = np.random.rand(2, 1, 64, 64).astype(np.float32)
    feats, grid = figures.stage_features(method.model, images, labels, 3)
    assert feats.shape == (2 * 8 * 8, method.model.encoder_channels[3])
    expected = np.zeros((2, 8, 8), np.int64)
    expected[:, 4:, :4] = 2
    assert np.array_equal(grid, expected.reshape(-1))


def test_figures_from_tiny_networks(tmp_path, acdc_dir, monkeypatch):
    monkeypatch.setattr(figures, "FIGURE4_PIXELS_PER_CLASS", 40)
    cfg = make_cfg(tmp_path, "demo")
    prepared_acdc(cfg, acdc_dir, cfg["data"]["image_size"])
    seed = cfg["experiments"]["seeds"][0]
    for run_id in ("acdc136_mt", "acdc136_ugpcl", "acdc136_ugpcl_contrast-none", "acdc136_ugpcl_contrast-pseudo"):
        save_tiny_checkpoint(cfg, run_id, seed)   # acdc136_cps left out: its panel reads "run missing"
    fake_run(cfg, "acdc68_em", seed, 0.5)
    fake_run(cfg, "acdc68_mt", seed, 0.5)   # finished with other settings: its curves are left out
    other = find_run(cfg, "acdc68_mt")
    (other.run_dir(cfg, seed) / "config.yaml").write_text(yaml.safe_dump(other.config(
        make_cfg(tmp_path, "demo", "train.iterations=7"), seed)))
    files = figures.make_figures(cfg, "cpu")

    assert set(files) == set(tables.figure_outputs(cfg))
    read = {}
    for key, path in files.items():
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key
            read[key] = matplotlib.image.imread(path)
    # Figure 3: 4 slices x (image, truth, MT, CPS, UGPCL); Figure 4: three t-SNE panels side by side
    assert read["figure3"].shape[0] > read["figure3"].shape[1] * 0.5
    assert read["figure4"].shape[1] > 2 * read["figure4"].shape[0]
    # one figure of curves; the same curves as data for dvc plots: only the run with logs has rows
    assert read["curves"].shape[0] > read["curves"].shape[1]
    loss = files["curves_loss"].read_text().splitlines()
    assert loss[0] == "step\tloss\tsetting\trun\tseed" and len(loss) == 1 + 10
    assert loss[1].split("\t") == ["1", "1", "acdc-68", "em", str(seed)]
    assert [line.split("\t")[:3] for line in files["curves_val"].read_text().splitlines()[1:]] == [
        ["5", "54.0000", "acdc-68"], ["10", "59.0000", "acdc-68"]]
    # the loss terms: a panel per Table 1 run (4 settings x 8 methods), the em run's two terms as data
    assert read["loss_terms"].shape[1] > read["loss_terms"].shape[0]
    terms = files["curves_terms"].read_text().splitlines()
    assert terms[0] == "step\tvalue\tterm\tsetting\trun\tseed" and len(terms) == 1 + 2 * 10
    assert terms[11].split("\t") == ["1", "0.5", "sup", "acdc-68", "em", str(seed)]
    # a checkpoint of a run trained with other settings is not drawn in Figures 3 and 4 either
    assert figures._load(find_run(cfg, "acdc136_mt"), cfg, "cpu") is not None
    mt = find_run(cfg, "acdc136_mt")
    (mt.run_dir(cfg, seed) / "config.yaml").write_text(yaml.safe_dump(mt.config(make_cfg(tmp_path, "demo",
                                                                                           "train.lr=0.5"), seed)))
    assert figures._load(mt, cfg, "cpu") is None


def test_loss_terms_are_read_from_the_logs_with_the_weighted_consistency_term(tmp_path, monkeypatch):
    """Every numeric key but the bookkeeping and the non-losses is a term (a method of one's own
    included); `weight×unsup` / `weight×con` is the per-iteration product, left out where the weight is 0."""
    stamp = "2026-01-01T00:00:00Z"
    mt = [{"t": 0, "lr": 0.01, "loss": 1.0, "sup": 1.0, "unsup": 0.5, "weight": 0.0, "time": stamp},
          {"t": 1, "lr": 0.01, "loss": 1.1, "sup": 1.0, "unsup": 0.4, "weight": 0.25, "threshold": 0.6, "certain": 0.9,
           "time": stamp},
          {"t": 2, "lr": 0.01, "loss": 1.2, "sup": 0.8, "unsup": 0.2, "weight": 2.0, "time": stamp}]
    ugpcl = [{"t": 0, "lr": 0.01, "loss": 3.0, "sup": 1.0, "sup_tf": 0.9, "con": 0.3, "weight": 0.5, "rot": 1.4,
              "time": stamp},
             {"t": 1, "lr": 0.01, "loss": 3.0, "sup": 1.0, "sup_tf": 0.9, "con": 0.2, "weight": 0.5, "rot": 1.3,
              "contrast": 5.0, "threshold": 0.5, "certain_fraction": 0.7, "uncertainty_rate": 0.2, "time": stamp}]
    mine = [{"t": t, "lr": 0.01, "loss": 2.0, "my_term": 0.5 + t, "time": stamp} for t in range(3)]

    curves = figures.term_curves(mt)
    assert list(curves) == ["loss", "sup", "unsup", "weight×unsup"]
    assert curves["weight×unsup"][0].tolist() == [1, 2] and curves["weight×unsup"][1] == pytest.approx([0.1, 0.4])
    assert curves["unsup"][1] == pytest.approx([0.5, 0.4, 0.2])
    curves = figures.term_curves(ugpcl)
    assert list(curves) == ["loss", "sup", "sup_tf", "con", "rot", "weight×con", "contrast"]
    assert curves["weight×con"][1] == pytest.approx([0.15, 0.1]) and curves["contrast"][0].tolist() == [1]
    assert figures.loss_term_names(mine) == ["loss", "my_term"]
    from ugpcl.methods import base

    class Mine(base.Method):  # a user's method declares its logged non-losses beside itself
        name = "mine_with_rate"
        diagnostics = ("weight", "my_term")

    monkeypatch.setitem(base._REGISTRY, Mine.name, Mine)
    assert figures.loss_term_names(mine) == ["loss"]
    monkeypatch.delitem(base._REGISTRY, Mine.name)
    assert mt[1] == {"t": 1, "lr": 0.01, "loss": 1.1, "sup": 1.0, "unsup": 0.4, "weight": 0.25, "threshold": 0.6,
                     "certain": 0.9, "time": stamp}  # the rows read are left as they are

    groups = {"acdc-68": [("mt", {1: (mt, []), 2: (mt[1:], [])}), ("ugpcl", {1: (ugpcl, [])})],
              "isic-91": [("mine", {1: (mine, [])}), ("em", {1: ([], [])})]}
    path = figures.loss_terms(groups, tmp_path / "terms.png")
    image = matplotlib.image.imread(path)
    assert image.shape[1] > image.shape[0] * 0.8   # 2 x 2 panels under a legend of 10 terms
    rows = figures.loss_term_rows(groups).splitlines()
    assert len(rows) == 1 + (3 + 3 + 3 + 2) + 2 * 4 + (2 * 6 + 1) + 3 * 2   # mt seeds 1 and 2, ugpcl, mine
    assert "2\t0.1\tweight×unsup\tacdc-68\tmt\t1" in rows and "3\t0.4\tweight×unsup\tacdc-68\tmt\t2" in rows

    empty = figures.loss_terms({"acdc-68": [("mt", {1: ([], [])})]}, tmp_path / "empty.png")
    shape = matplotlib.image.imread(empty).shape
    assert shape[1] > 3 * shape[0]   # the one-line placeholder
    assert figures.loss_term_rows({"acdc-68": [("mt", {1: ([], [])})]}) == "step\tvalue\tterm\tsetting\trun\tseed\n"


def test_training_curves_say_which_setting_has_no_log_yet(tmp_path, monkeypatch):
    """A setting none of whose runs has started (or validated) says so in its panels, not empty axes."""
    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, path, **kw: drawn.setdefault("fig", fig) and path)
    log = [{"t": t, "lr": 0.01, "loss": 1.0 - 0.1 * t} for t in range(4)]
    figures.training_curves({"acdc-68": [("mt", {1: (log, [{"t": 3, "val_dice": 0.5}])})],
                             "acdc-136": [("mt", {1: (log, [])})],
                             "isic-91": [("mt", {1: ([], [])}), ("em", {1: ([], [])})]}, tmp_path / "c.png")
    said = [[" ".join(t.get_text() for t in ax.texts) for ax in drawn["fig"].axes[i:i + 2]] for i in (0, 2, 4)]
    assert said == [["", ""], ["", "no validation yet"], ["no training log yet", "no validation yet"]]


def test_a_dataset_of_our_own_gets_its_own_table_without_the_papers_columns(tmp_path):
    mine = {"kind": "folder", "images": str(tmp_path), "image_pattern": "{id}.png", "mask_pattern": "{id}_m.png",
            "classes": {0: "background", 255: "lesion"}, "split": [7, 3], "seed": 0, "regimes": {"4": 4}}
    cfg = make_cfg(tmp_path, "paper", f"data.mine={json.dumps(mine)}", "experiments.table1.methods=[supervised, ugpcl]",
                   'experiments.table1.datasets={acdc: ["136"], mine: ["4"]}', "experiments.table2.dataset=mine",
                   "experiments.table2.regime='4'")
    fake_run(cfg, "mine4_ugpcl", 1337, 0.75)
    fake_run(cfg, "acdc136_ugpcl", 1337, 0.88)
    cells = tables.build_tables(cfg, tables.collect_results(cfg))
    ours = cell(cells["table1"], dataset="mine", labeled="4", method="ugpcl")
    assert ours.paper_dice is None and ours.verdict == "no paper value"
    assert cell(cells["table1"], dataset="acdc", labeled="136", method="ugpcl").paper_dice == pytest.approx(88.11)
    # Table 2 on our dataset: the matrix's rows, no paper values; Table 3 stays on ACDC-136 with them
    assert len(cells["table2"]) == 7 and all(c.paper_dice is None for c in cells["table2"])
    assert cell(cells["table2"], row=7).run_id == "mine4_ugpcl"
    assert cell(cells["table3"], feature="conv2").paper_dice == pytest.approx(88.11)

    files = write_report(cfg)
    md = files["table1_md"].read_text()
    assert "## Table 1 on mine (kind folder)" in md
    assert "| mine | 4 | ugpcl | mine4_ugpcl | 1/1 | 75.00 ± – | 73.00 ± – | 65.00 ± – | 63.00 ± – | 3.50 ± – mm |" in md
    assert "| acdc | 136 | ugpcl | acdc136_ugpcl | 1/1 | 88.00 ± – | 86.00 ± – | 88.11 | -0.11 | matches |" in md
    rows = list(csv.DictReader(files["table1_csv"].open()))
    assert [r["dice_paper"] for r in rows if r["dataset"] == "mine"] == ["", ""]
    assert json.loads((tables.metrics_dir(cfg) / "table1" / "ugpcl.json").read_text())["mine-4"] == pytest.approx(75.0)
    page = files["html"].read_text()
    checker = TagChecker()
    checker.feed(page)
    assert checker.errors == [] and {"table1", "table1-mine"} <= set(checker.ids)
    mine_table = page.split('id="table1-mine"')[1].split("</table>")[0]
    assert "mine4_ugpcl" in mine_table and "paper" not in mine_table and "<th>HD95 (medpy)</th>" in mine_table
    assert "mine: folder" in page and "acdc: official" in page


def test_per_class_scores_and_paired_tests(tmp_path):
    """UGPCL (two seeds) against MT (two seeds) on the same six cases: each case's Dice averaged over
    the seeds, then paired; all six differences positive and distinct: the exact two-sided p is 2/2^6."""
    cfg = make_cfg(tmp_path, "paper", "experiments.seeds=[1, 2]")
    fake_run(cfg, "acdc136_ugpcl", 1, 0.88)
    fake_run(cfg, "acdc136_ugpcl", 2, 0.90)
    fake_run(cfg, "acdc136_mt", 1, 0.80, spread=0.5)
    fake_run(cfg, "acdc136_mt", 2, 0.82, spread=0.5)
    fake_run(cfg, "isic91_mt", 1, 0.60)  # no UGPCL run on isic-91: nothing to pair
    files = write_report(cfg)

    paired = list(csv.DictReader(files["table1_paired_csv"].open()))
    assert len(paired) == 1
    row = paired[0]
    assert (row["dataset"], row["labeled"], row["method"], row["n_cases"]) == ("acdc", "136", "mt", "6")
    assert (row["seeds_ugpcl"], row["seeds_method"]) == ("2", "2")
    assert float(row["ugpcl_case_dice"]) == pytest.approx(89.0)
    assert float(row["method_case_dice"]) == pytest.approx(81.0)
    assert float(row["mean_diff"]) == pytest.approx(8.0) and float(row["wilcoxon_w"]) == 0
    assert float(row["p"]) == pytest.approx(2 / 2**6)

    cells = {c.run_id: c for c in tables.build_tables(cfg, tables.collect_results(cfg))["table1"] if c.run_id}
    per_class = [r for r in csv.DictReader(files["table1_per_class_csv"].open())
                 if r["method"] == "ugpcl" and r["metric"] == "Dice"]
    assert [(r["class"], r["mean"], r["std"], r["seeds"]) for r in per_class] == [
        ("RV", "86.0", "1.41", "2"), ("Myo", "87.0", "1.41", "2"), ("LV", "94.0", "1.41", "2")]  # the data's order
    assert cells["acdc136_ugpcl"].per_class["RV"]["HD95"] == [pytest.approx(3.2), pytest.approx(3.2)]  # medpy's

    md = files["table1_md"].read_text()
    assert md.splitlines()[2].startswith("*5 finished run-seeds trained 2026-01-01 on cuda (NVIDIA H100) at 0123456; "
                                         "written ")  # what the table was made from, under its title
    assert png_text(files["table1_bars"])["Description"].startswith("5 finished run-seeds trained 2026-01-01 ")
    assert f"## {tables.PER_CLASS_TITLE}: acdc-136" in md and f"## {tables.paired_title('ugpcl')}" in md
    assert "| ugpcl | 2/2 | 86.0 ± 1.4 | 76.0 ± 1.4 | 3.2 ± 0.0 | 1.2 ± 0.0 | 87.0 ± 1.4 |" in md
    assert "| acdc | 136 | mt | 6 | 2 / 2 | 89.00 | 81.00 | +8.00 | 0 | 0.031 |" in md
    page = files["html"].read_text()
    assert ">5 finished run-seeds trained 2026-01-01 on cuda (NVIDIA H100) at 0123456; generated " in page
    assert "`" not in page and "<code>run</code>" in page  # Markdown's inline code (the choices) as HTML
    assert html.with_code("`a` < `b`") == "<code>a</code> &lt; <code>b</code>" and html.with_code("1`") == "1`"
    table1 = page.split('id="table1"')[1].split("</table>")[0]
    assert "<th>p vs UGPCL (cases)</th>" in table1 and "<td>0.031 (6)</td>" in table1
    assert 'id="paired"' in page and 'id="per-class-acdc-136"' in page
    assert "UGPCL is better than the baseline in 1 of 1 comparisons" in page


def test_demo_figures_are_marked_synthetic_on_the_png(tmp_path):
    """The mark is drawn into the picture: dark red pixels that an unmarked chart does not have."""
    groups = {"acdc-68": [("mt", [40.0], 74.2), ("ugpcl", [45.0, 47.0], 80.05)]}
    red = []
    for marked in (False, True):
        path = figures.bar_chart(groups, "t", tmp_path / f"{marked}.png", synthetic=marked)
        rgb = matplotlib.image.imread(path)[..., :3]
        red.append(int(((rgb[..., 0] > 0.6) & (rgb[..., 1] < 0.15) & (rgb[..., 2] < 0.2)).sum()))
    assert red[0] == 0 and red[1] > 100


def test_bar_chart_draws_the_spread_only_of_several_seeds(tmp_path, monkeypatch):
    """A one-seed result has no std ("± –" in the tables): no error bar, not a zero-length one."""
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, path, **kw: drawn.append(fig) or path)

    def error_bars(groups):
        figures.bar_chart(groups, "t", tmp_path / "bars.png")
        fig = drawn.pop()
        ax = fig.axes[0]
        spread, = (c for c in ax.containers if isinstance(c, ErrorbarContainer))  # ours only: the paper's has none
        segments = [len(s) for s in spread.lines[2][0].get_segments()]
        label = ax.get_legend_handles_labels()[1][0]
        figures.plt.close(fig)  # what the replaced `save` would have done
        return segments, label

    mixed = {"acdc-68": [("mt", [40.0], 74.2), ("ugpcl", [45.0, 47.0], 80.05), ("cps", [], 74.76)]}
    assert error_bars(mixed) == ([0, 2, 0], "ours (mean ± std over seeds)")
    assert error_bars({"acdc-68": [("mt", [40.0], 74.2), ("ugpcl", [45.0], 80.05)]}) == ([0, 0], "ours (one seed)")


def test_a_method_of_our_own_sits_at_the_end_of_each_table1_setting(tmp_path):
    """README, 'Adding your own method': beside the paper's methods of its setting, no paper value."""
    from ugpcl.methods import base

    @base.register
    class Mine(base.Method):
        name = "mine"

        @dataclass(frozen=True)
        class HParams:
            pass

    try:
        cfg = make_cfg(tmp_path, "paper", "experiments.table1.methods=[supervised, ugpcl, mine]", "methods.mine={}")
        rows = tables.build_tables(cfg, tables.collect_results(cfg))["table1"]
    finally:
        del base._REGISTRY["mine"]
    keys = [(c.labels["dataset"], c.labels["labeled"], c.labels["method"]) for c in rows]
    for i, key in enumerate(keys):
        if key[2] == "mine":
            assert keys[i - 1][:2] == key[:2] and (i + 1 == len(keys) or keys[i + 1][:2] != key[:2]), key
    assert [k[:2] for k in keys if k[2] == "mine"] == [("acdc", "68"), ("acdc", "136"), ("isic", "91"), ("isic", "181")]
    mine = cell(rows, dataset="acdc", labeled="136", method="mine")
    assert mine.paper_dice is None and mine.verdict == "missing"


def png_text(path) -> dict[str, str]:
    """A PNG's tEXt chunks (matplotlib's `metadata=`)."""
    data, out, i = path.read_bytes(), {}, 8
    while i < len(data):
        size, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8]
        if kind == b"tEXt":
            key, _, value = data[i + 8:i + 8 + size].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        i += 12 + size
    return out


def test_the_stamp_says_which_runs_where_when_and_at_which_commit():
    def info(finished, device_name, *commits, modified=False):
        return {"finished": finished, "device": "cuda", "device_name": device_name, "git_commit": commits[-1],
                **({"git_commits": list(commits)} if len(commits) > 1 else {}), "code_modified": modified}

    code, now = {"commit": "feedface" * 5, "modified": False}, datetime(2026, 12, 7, 14, 5, tzinfo=timezone.utc)
    one = stamp.describe([info("2026-12-01T10:00:00+00:00", "NVIDIA H100", "a" * 40)], now, code)
    assert one == ("1 finished run-seed trained 2026-12-01 on cuda (NVIDIA H100) at aaaaaaa; "
                   "drawn 2026-12-07 14:05 UTC at feedfac")
    runs = [info("2026-12-03T00:00:00+00:00", "NVIDIA H200", "c" * 40, "d" * 40),  # resumed on other code
            info("2026-12-01T00:00:00+00:00", "NVIDIA H100", "a" * 40, "b" * 40, modified=True),
            {"finished": "2026-12-02T00:00:00+00:00", "device": "cpu", "git_commit": "e" * 40}]  # no device name
    many = stamp.describe(runs, now, {**code, "modified": True}, made="written")
    assert many == ("3 finished run-seeds trained 2026-12-01 to 2026-12-03 on cpu, cuda (NVIDIA H100), "
                    "cuda (NVIDIA H200) at 5 commits (aaaaaaa ... ddddddd) (some with uncommitted changes); "
                    "written 2026-12-07 14:05 UTC at feedfac with uncommitted changes")
    assert stamp.describe([], now, code) == "No finished run yet; drawn 2026-12-07 14:05 UTC at feedfac"
    results = {"r1": {1: {"run": runs[0]}, 2: {"run": runs[1]}}, "r2": {1: {"run": runs[2]}}}
    assert stamp.finished_runs(results) == runs
    assert stamp.finished_runs(results, ["r1", None]) == runs[:2]
    assert stamp.finished_runs(results, ["r1", "r2"], seeds=[1]) == [runs[0], runs[2]]


def test_the_stamp_and_the_mark_sit_under_the_legend_and_in_the_metadata(tmp_path):
    """A figure legend below the axes stays above the footer: saving with bbox_inches="tight" used to
    move it to the bottom of the cropped area, onto the text under the figure."""
    text = "7 finished run-seeds trained 2026-12-01 on cuda (NVIDIA H100) at aaaaaaa; drawn 2026-12-07 14:05 UTC"
    path = figures.figure4({"row 4": None, "row 7": None}, ["background", "RV", "Myo", "LV"], tmp_path / "f4.png",
                           synthetic=True, stamp=text)
    assert png_text(path)["Description"] == text and png_text(path)["Warning"] == figures.SYNTHETIC_MARK
    rgb = matplotlib.image.imread(path)[..., :3]

    def rows(colour, tol=0.02):
        return np.nonzero((np.abs(rgb - np.array(colour)) < tol).all(axis=-1).any(axis=1))[0]

    legend = rows(figures.CLASS_COLOURS[1])  # RV's patch: nothing else is drawn in that colour here
    mark = rows([0xb0 / 255, 0x00, 0x20 / 255])  # the mark's dark red (the watermark is faint)
    grey = rows([0x66 / 255] * 3)  # the stamp's grey (anti-aliased black text passes through it too)
    assert len(legend) and len(mark) and len(grey)
    assert legend.max() < mark.min() and mark.max() < grey.max()  # legend, then the mark, then the stamp
    plain = figures.figure4({"row 4": None}, ["background", "RV"], tmp_path / "plain.png")
    assert "Description" not in png_text(plain) and "Warning" not in png_text(plain)


def test_paired_tests_of_a_method_of_our_own_against_every_other_one(tmp_path):
    """experiments.table1.paired_with set to one's own method: the paired tests, their CSV columns, the tables'
    p column, the verdict's sentence and the settings name it, and UGPCL is one of the methods it is compared
    with; the verdict's claims of the paper stay about UGPCL."""
    cfg = make_cfg(tmp_path, "paper", "experiments.table1.methods=[supervised, mt, ugpcl, mine]", "methods.mine={}",
                   "experiments.table1.paired_with=mine")
    fake_run(cfg, "acdc136_mine", 1337, 0.85)
    fake_run(cfg, "acdc136_mt", 1337, 0.80, spread=0.5)
    fake_run(cfg, "acdc136_ugpcl", 1337, 0.89, spread=0.5)
    fake_run(cfg, "isic91_ugpcl", 1337, 0.80)  # no run of mine on isic-91: nothing to pair
    files = write_report(cfg)

    paired = list(csv.DictReader(files["table1_paired_csv"].open()))
    assert [(r["dataset"], r["labeled"], r["method"]) for r in paired] == [("acdc", "136", "mt"),
                                                                          ("acdc", "136", "ugpcl")]
    assert [(r["seeds_mine"], float(r["mine_case_dice"]), float(r["mean_diff"])) for r in paired] == [
        ("1", pytest.approx(85.0), pytest.approx(5.0)), ("1", pytest.approx(85.0), pytest.approx(-4.0))]
    assert "seeds_ugpcl" not in paired[0] and float(paired[0]["p"]) == pytest.approx(2 / 2**6)
    md = files["table1_md"].read_text()
    assert f"## {tables.paired_title('mine')}" in md and "mine against each other method" in md
    assert "mine is the method `experiments.table1.paired_with` names" in md
    assert "| other method | cases | seeds (mine / other method) | case Dice mine | case Dice other method |" in md
    page = files["html"].read_text()
    verdict_text = page.split('id="verdict">')[1].split("</p>")[0]
    assert "mine is better than the other method in 1 of 2 comparisons, worse in 1" in verdict_text
    assert "UGPCL has the best mean Dice in 1 of 1 Table 1 settings" in verdict_text and "baseline" not in verdict_text
    assert "<th>p vs mine (cases)</th>" in page.split('id="table1"')[1].split("</table>")[0]
    settings = page.split('id="settings"')[1].split("</table>")[0]
    assert "<td>paired tests</td><td>mine against each other method of a Table 1 setting" in settings
