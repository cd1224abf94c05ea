"""The package's shape: layers that only point down, no import cycle (lazy imports included),
method hyper-parameters checked when params.yaml is loaded, one paper-vs-code table."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from ugpcl import choices
from ugpcl.config import load_config
from ugpcl.errors import UserError
from ugpcl.study import load_study

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "ugpcl"

# bottom to top; a module may import its own layer or lower ones, never a higher one
LAYERS = [
    ("core", ["ugpcl", "ugpcl.errors", "ugpcl.fileio", "ugpcl.processor", "ugpcl.config", "ugpcl.config_checks", "ugpcl.schema_errors", "ugpcl.device",
              "ugpcl.choices", "ugpcl.lifetime", "ugpcl.lock"]),
    ("nn and data", ["ugpcl.models", "ugpcl.losses", "ugpcl.contrast", "ugpcl.ema", "ugpcl.geometry",
                     "ugpcl.data", "ugpcl.metrics"]),
    ("methods", ["ugpcl.methods"]),
    ("engine", ["ugpcl.engine"]),
    ("application", ["ugpcl.study", "ugpcl.evaluation", "ugpcl.predict", "ugpcl.report", "ugpcl.projection",
                     "ugpcl.dvcmatrix"]),
    ("command line", ["ugpcl.cli", "ugpcl.commands", "ugpcl.forkserver"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every ugpcl module `name` imports, wherever the import statement stands (lazy ones too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ugpcl"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ugpcl":
                continue
            subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known}
            found |= subs if subs and len(subs) == len(node.names) else subs | {target}
    return {m for m in found if m in known} - {name}


def layer_of(name: str) -> int:
    best = None
    for level, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (level, len(prefix))
    assert best is not None, f"{name} belongs to no layer: add it to LAYERS in {__file__}"
    return best[0]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_no_upward_import():
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in graph().items() for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert upward == []


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_listing_and_reporting_runs_import_no_monai():
    """`import monai` loads every MONAI submodule (about 2 s, half of `ugpcl runs`); only building
    UGPCL's decoder and scoring a checkpoint need it, and import it when they run. A fresh process:
    this one has MONAI loaded by other tests. `ugpcl runs` draws nothing either (no matplotlib)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from ugpcl.cli import build_parser\n"
            "build_parser()\n"  # every subcommand's parser, as `ugpcl --help` builds them
            "import ugpcl.report.build, ugpcl.projection, ugpcl.study, ugpcl.methods, ugpcl.metrics\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'monai'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    runs = ("import sys\n"
            "from ugpcl.cli import main\n"
            "main(['runs', '--profile', 'demo'])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'monai', 'matplotlib'}))\n")
    out = subprocess.run([sys.executable, "-c", runs], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[]"


def test_help_imports_no_torch_and_still_names_the_methods():
    """`ugpcl --help` builds every parser without registering the methods (which imports torch):
    the --method choices are read when a value is checked or a command's help is printed."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from ugpcl.cli import build_parser\n"
            "build_parser().format_help()\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from ugpcl.cli import build_parser
    from ugpcl.methods import names

    parser = build_parser("bench")
    bench = parser._subparsers._group_actions[0].choices["bench"]
    assert ", ".join([*names(), "all"]) in " ".join(bench.format_help().split())
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--method", "nope"])
    assert parser.parse_args(["bench", "--method", "all"]).method == "all"
    train = build_parser("train").parse_args(["train", "--method", "cps", "--dataset", "acdc", "--regime", "68"])
    assert train.method == "cps"


def test_every_command_and_option_has_help():
    """Each command's --help opens with what it does, and every option says what it is for."""
    from ugpcl.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"train", "evaluate", "predict", "inspect", "runs", "report"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description, name
        bare = [a.option_strings or a.dest for a in parser._actions if not a.help]
        assert bare == [], f"ugpcl {name}: {bare}"


def test_monai_is_imported_where_it_is_used():
    """The other half: a UGPCL network builds and a case is scored without importing MONAI first."""
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from ugpcl.models import SwinConfig, UNetConfig, build_unet\n"
            "from ugpcl.metrics import score_volume\n"
            "net = build_unet(UNetConfig(2, 1, image_size=64, width=8, blocks=(1, 1, 1, 1), swin=SwinConfig()))\n"
            "print(type(net.swin_decoder).__name__)\n"
            "labels = np.zeros((8, 8), np.int64); labels[2:5, 2:5] = 1\n"
            "print(score_volume(labels, labels, 2)['hd95'][0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["SwinDecoder", "0.0"]


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "ugpcl" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("def f():\n    from ..b import thing\n    from . import c\n")
    found = imports("ugpcl.sub.a", pkg / "a.py", {"ugpcl.b", "ugpcl.sub.c", "ugpcl.sub"})
    assert found == {"ugpcl.b", "ugpcl.sub.c"}


# --- method hyper-parameters at config load ------------------------------------------------------
def params_copy(tmp_path, edit) -> Path:
    cfg = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(cfg)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["methods"]["mt"].pop("gate_iterations"), r"methods\.mt\.gate_iterations: missing"),
    (lambda c: c["methods"]["mt"].update(gate_iteration=c["methods"]["mt"].pop("gate_iterations")),
     r"methods\.mt\.gate_iteration: unknown .*did you mean gate_iterations"),
    (lambda c: c["methods"]["ugpcl"].update(temperature="low"), r"methods\.ugpcl\.temperature: 'low' is not of type"),
    (lambda c: c["methods"]["ugpcl"].update(contrast="all"), r"methods\.ugpcl\.contrast: 'all' is not one of"),
    (lambda c: c["methods"]["cct"].update(drop_gamma=[0.7]), r"methods\.cct\.drop_gamma"),
    (lambda c: c["methods"]["uamt"].update(mc_passes=3), r"methods\.uamt\.mc_passes: 3 is not a multiple of 2"),
    (lambda c: c["methods"].pop("em"), r"methods\.em: section missing"),
    (lambda c: c["methods"].update(fancy={}), r"methods\.fancy: no such method"),
    (lambda c: c["experiments"]["table1"]["methods"].append("fancy"), r"uses method 'fancy'"),
    (lambda c: c["experiments"]["table1"].update(paired_with="pseudo"),
     r"experiments\.table1\.paired_with is 'pseudo', which is not one of experiments\.table1\.methods "
     r"\(supervised, mt, uamt, em, dct, cct, cps, ugpcl\).*Fix: set experiments\.table1\.paired_with to one of"),
    (lambda c: c["experiments"]["table1"].update(methods=["supervised", "mt"]),  # the default ugpcl not trained
     r"paired_with is 'ugpcl', which is not one of experiments\.table1\.methods \(supervised, mt\)"),
    (lambda c: c["experiments"]["table2"]["rows"][1]["overrides"].update(contrast="all"),   # where the row writes it
     r"experiments\.table2\.rows\[1\] \(row 2\)\.overrides\.contrast: 'all' is not one of"),
    (lambda c: c["experiments"]["table2"]["rows"].append({"row": 8, "method": "mt", "overrides": {"ema_decay": 1.5}}),
     r"experiments\.table2\.rows\[7\] \(row 8\)\.overrides\.ema_decay: 1\.5 is greater than the maximum of 1"),
])
def test_bad_method_hyperparameter_fails_at_config_load_naming_the_key(tmp_path, edit, message):
    path = params_copy(tmp_path, edit)
    load_config(path)  # the generic schema leaves method sections to their dataclasses
    with pytest.raises(UserError, match=message) as err:
        load_study(path)
    assert str(path) in str(err.value) and "Fix:" in str(err.value)


def test_cli_reports_a_bad_hyperparameter_without_traceback(tmp_path):
    import subprocess
    import sys

    path = params_copy(tmp_path, lambda c: c["methods"]["mt"].pop("gate_iterations"))
    out = subprocess.run([sys.executable, "-m", "ugpcl.cli", "runs", "--config", str(path)], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "methods.mt.gate_iterations: missing" in out.stderr


# --- one paper-vs-code table --------------------------------------------------------------------
def test_readme_renders_the_choices_table_of_the_package():
    table = choices.markdown(load_config(profile="paper"))
    assert table in (REPO / "README.md").read_text(), "README's table is stale: paste `ugpcl choices` into it"


def test_every_choice_names_a_real_key():
    cfg = load_config(profile="paper")
    for c in choices.CHOICES:
        choices.value(cfg, c.key)


# --- the README's reliability table -----------------------------------------------------------------
def test_readme_reliability_table_names_tests_that_exist():
    section = (REPO / "README.md").read_text().split("## Reliability")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line.split("|")[3]]
    assert len(rows) >= 30
    for row in rows:
        module = None
        for ref in re.findall(r"`([^`]+)`", row.split("|")[3]):
            if ref.endswith(".py"):  # a whole file
                assert (REPO / "tests" / ref).is_file(), ref
                continue
            file, _, name = ref.rpartition("::")
            module = file or module
            source = (REPO / "tests" / module).read_text()
            pattern = name.replace("*", r"\w*")
            assert re.search(rf"^def {pattern}\(", source, re.M), f"{module}::{name} (README reliability table)"
