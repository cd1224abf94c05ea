"""tools/gpu_study.py on hand-made bundles: records that clash, runs that did not finish, archives
that are no bundle. Its round trip with real runs (`gpu_session.py train`, then `collect` and
`markdown`) is in tests/test_gpu_session.py, beside the training it reads.
"""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from ugpcl.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_study", ROOT / "tools" / "gpu_study.py")
gpu_study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_study)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_study.py"), *args], capture_output=True, text=True,
                          timeout=120)

def bundle(path: Path, runs: dict[str, dict]) -> Path:
    """A runs.tgz holding, per run id, run.json (the dict given) and the two files a finished run needs."""
    with tarfile.open(path, "w:gz") as tar:
        for run, info in runs.items():
            files = {"run.json": json.dumps(info), "config.yaml": "model: {pretrained: false}\n",
                     "eval/summary.json": json.dumps({"dice": 0.5, "jaccard": 0.4})}
            for name, text in files.items():
                data = text.encode()
                member = tarfile.TarInfo(f"runs/{run}/seed1337/{name}")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    return path


FINISHED = {"status": "finished", "profile": "paper"}


def test_clashing_records_are_refused_before_anything_is_written(tmp_path):
    records = tmp_path / "records"
    one = bundle(tmp_path / "one.tgz", {"acdc136_em": {**FINISHED, "seconds": 1}})
    other = bundle(tmp_path / "other.tgz", {"acdc136_em": {**FINISHED, "seconds": 2},
                                            "acdc136_cps": FINISHED})
    with pytest.raises(UserError, match="acdc136_em seed 1337 is in .*one.tgz too, with other files"):
        gpu_study.collect([one, other], records)
    assert not records.exists()   # the clash found before the first write

    assert gpu_study.collect([one], records) == [f"recorded: paper/runs/acdc136_em/seed1337 (from {one})"]
    with pytest.raises(UserError, match=r"holds another record of this run-seed.*Fix: pass --replace"):
        gpu_study.collect([other], records)
    assert not (records / "paper" / "runs" / "acdc136_cps").exists()   # nothing of that bundle written
    held = records / "paper" / "runs" / "acdc136_em" / "seed1337" / "run.json"
    assert json.loads(held.read_text())["seconds"] == 1
    gpu_study.collect([other], records, replace=True)
    assert json.loads(held.read_text())["seconds"] == 2
    assert (records / "paper" / "runs" / "acdc136_cps" / "seed1337" / "eval" / "summary.json").is_file()


def test_runs_that_did_not_finish_are_named_and_left_out(tmp_path):
    source = tmp_path / "out"
    source.mkdir()
    bundle(source / "runs.tgz", {"acdc136_em": FINISHED, "acdc136_cct": {**FINISHED, "status": "running"}})
    lines = gpu_study.collect([source], tmp_path / "records")   # the lease's folder: its runs.tgz
    assert f"left out: paper acdc136_cct seed 1337 (status 'running') from {source / 'runs.tgz'}" in lines
    assert sorted(p.name for p in (tmp_path / "records" / "paper" / "runs").iterdir()) == ["acdc136_em"]


def test_what_is_no_bundle_is_a_clear_error_and_no_member_is_extracted(tmp_path):
    with pytest.raises(UserError, match="this folder holds no runs.tgz"):
        gpu_study.collect([tmp_path], tmp_path / "records")
    broken = tmp_path / "broken.tgz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 not really")
    with pytest.raises(UserError, match=r"broken.tgz: not a readable gzip tar archive .*Fix: copy runs.tgz"):
        gpu_study.collect([broken], tmp_path / "records")
    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tar:   # names outside runs/<run>/seed<seed>/<record file>
        for name in ("../escape.json", "/abs/run.json", "runs/../../x/seed1/run.json", "runs/a/seed1/../../run.json"):
            member = tarfile.TarInfo(name)
            member.size = 2
            tar.addfile(member, io.BytesIO(b"{}"))
    with pytest.raises(UserError, match="holds no run records"):
        gpu_study.collect([evil], tmp_path / "records")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.tgz", "evil.tgz"]


def test_the_cli_says_what_is_wrong_without_a_traceback(tmp_path):
    result = cli("collect", str(tmp_path / "nothing.tgz"), "--records", str(tmp_path / "r"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / 'nothing.tgz'}: no such bundle. Fix: pass DIR/runs.tgz")


def test_the_committed_gpu_results_and_their_page_go_together_and_agree():
    """reports/gpu_acdc.md holds the tables `markdown` makes of reports/gpu_acdc/ (pasted under its text);
    records without the page, or the page without records, is a half-landed GPU session."""
    records, page = ROOT / "reports" / "gpu_acdc", ROOT / "reports" / "gpu_acdc.md"
    recorded = sorted(records.glob("*/runs/*/seed*/run.json"))
    assert bool(recorded) == page.is_file(), (
        "reports/gpu_acdc.md and the records under reports/gpu_acdc/ land together: run "
        "`python tools/gpu_study.py markdown` and paste its tables into reports/gpu_acdc.md")
    if recorded:
        text = page.read_text()
        for line in gpu_study.markdown("paper", records).splitlines():
            if line.startswith("|"):
                assert line in text, f"reports/gpu_acdc.md lacks (run tools/gpu_study.py markdown and paste): {line}"
