"""The workflow's conventions, checked as CI runs the suite: `snakefmt --check` formatting,
`snakemake --lint` for the paper and demo profiles, a description for every key of the config
schema, the refusal of --config values the jobs would not see, and the README's word on the one command line
Snakemake itself cannot give a clear error for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = ["Snakefile", "workflow/rules"]
# The lints left, each justified in a comment beside the rules it concerns (workflow/rules/data.smk):
# jobs run this checkout's `ugpcl` with the workflow's interpreter, not a per-rule conda env or container.
JUSTIFIED = {"Specify a conda environment or container for each rule."}


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed beside {sys.executable} (pip install -c constraints.txt -e '.[test]')")
    return str(path)


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_snakefmt_leaves_the_workflow_unchanged():
    out = run([tool("snakefmt"), "--check", *WORKFLOW_FILES])
    assert out.returncode == 0, f"run `snakefmt {' '.join(WORKFLOW_FILES)}`:\n{out.stdout}{out.stderr}"


def lint_titles(text: str) -> list[str]:
    """The titles of `snakemake --lint`'s findings (`    * TITLE:` lines of its plain-text output)."""
    return [m.group(1) for m in re.finditer(r"^\s+\* (.+?):?$", text, flags=re.M)]


def test_lint_titles_are_read_from_snakemakes_output():
    text = ("Lints for rule train (line 16, train.smk):\n"
            "    * Specify a conda environment or container for each rule.:\n"
            "      This way, the used software ...\n"
            "    * Shell command directly uses variable UGPCL from outside of the rule:\n")
    assert lint_titles(text) == ["Specify a conda environment or container for each rule.",
                                 "Shell command directly uses variable UGPCL from outside of the rule"]


@pytest.mark.parametrize("profile", [[], ["--profile", "workflow/profiles/demo"]], ids=["paper", "demo"])
def test_snakemake_lint_finds_only_the_justified(profile):
    out = run([tool("snakemake"), "--lint", *profile])
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    titles = lint_titles(text)
    unjustified = [t for t in titles if t not in JUSTIFIED]
    assert not unjustified, f"snakemake --lint {' '.join(profile)}:\n{text}"
    assert out.returncode == (1 if titles else 0), text


def test_config_values_on_the_command_line_are_refused_before_they_are_checked_as_params_yaml(tmp_path):
    """`--config methods=...` was validated as params.yaml's value, and Snakemake reads it as text:
    "params.yaml: methods.mt.ema_decay: '0.5' is not of type 'number'". The jobs read params.yaml, so only
    profile=NAME (and the demo profile's forkserver=true) is taken; a --configfile only where it agrees."""
    other = tmp_path / "other.yaml"
    other.write_text("profile: demo\ntrain: {iterations: 6000, lr: 0.5}\n")  # iterations as params.yaml
    out = run([tool("snakemake"), "-n", "--nolock", "--profile", "workflow/profiles/demo",
               "--config", 'methods={"mt":{"ema_decay":0.5}}', "--configfile", str(other)])
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text, text
    said = f"--config methods=..., --configfile {other}: train.lr: only --config profile=NAME (and forkserver=true"
    assert said in text
    assert "Fix: edit params.yaml (or add a profile under `profiles:`)" in text and "train.iterations" not in text
    assert "params.yaml: methods" not in text and "is not of type" not in text


def test_the_readme_says_why_a_target_after_resources_fails_and_what_works():
    """`snakemake --cores 1 --resources gpu=1 all` stops in Snakemake's argument parser (a ValueError
    with a traceback, before any profile or Snakefile is read), so the workflow cannot give a clearer
    error; the README's first workflow paragraph says so. When a Snakemake release fixes it, this fails:
    then drop the README's note."""
    snakemake = tool("snakemake")
    failed = run([snakemake, "--cores", "1", "--resources", "gpu=1", "all", "-n"])
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "dictionary update sequence element" in said, said
    readme = (ROOT / "README.md").read_text()
    workflow = readme.split("## Running the study: Snakemake, DVC and the report")[1].split("\n### ")[1]
    assert "`snakemake --cores 1 --resources gpu=1 all` fails" in workflow
    assert "before it reads a profile or the Snakefile" in workflow and "`--resources=gpu=1 all` works" in workflow
    works = run([snakemake, "--cores", "1", "--resources=gpu=1", "all", "-n"])
    assert works.returncode == 0 and "Traceback" not in works.stderr, works.stdout + works.stderr


def test_what_dvc_plots_show_writes_is_ignored_by_git():
    assert "/dvc_plots/" in (ROOT / ".gitignore").read_text().splitlines()   # in the repository root


def undescribed(node, where: str = "") -> list[str]:
    """The keys under `properties` anywhere in a schema node that have no `description` (an `if`'s are
    conditions on keys described where they are defined)."""
    if isinstance(node, list):
        return [k for i, item in enumerate(node) for k in undescribed(item, f"{where}[{i}]")]
    if not isinstance(node, dict):
        return []
    out = [f"{where}.{key}" for key, sub in node.get("properties", {}).items()
           if not (isinstance(sub, dict) and sub.get("description"))]
    return out + [k for key, sub in node.items() if key != "if"
                  for k in undescribed(sub, f"{where}.{key}" if key != "properties" else where)]


KEYWORDS = {"$schema", "title", "description", "type", "additionalProperties", "required", "properties", "$defs",
            "$ref", "minimum", "maximum", "exclusiveMinimum", "multipleOf", "minItems", "maxItems", "items",
            "minProperties", "propertyNames", "pattern", "minLength", "enum", "const", "oneOf", "anyOf", "allOf", "if",
            "then", "else"}


def not_keywords(node, where: str = "") -> list[str]:
    """Keys of schema nodes that JSON Schema does not know (a comma in an unquoted flow-style description
    makes one), below `node`; the names under `properties` and `$defs` are keys of the config, not of it."""
    if isinstance(node, list):
        return [k for i, item in enumerate(node) for k in not_keywords(item, f"{where}[{i}]")]
    if not isinstance(node, dict):
        return []
    out = [f"{where}.{k}" for k in node if k not in KEYWORDS]
    for key, sub in node.items():
        named = sub.items() if key in ("properties", "$defs") and isinstance(sub, dict) else [(key, sub)]
        out += [k for name, schema in named for k in not_keywords(schema, f"{where}.{name}")]
    return out


def test_every_key_of_the_config_schema_has_a_description():
    """A description per key (Snakemake's template): config errors quote it as the fix for a wrong value."""
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "params.schema.yaml").read_text())
    assert undescribed({"properties": {"x": {}}}) == [".x"]   # the check itself finds a bare key
    assert undescribed(schema) == []
    assert not_keywords(yaml.safe_load("properties: {x: {type: string, description: a, b}}")) == [".x.b"]
    assert not_keywords(schema) == []
