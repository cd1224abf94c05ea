# The whole study: prepared data -> one training job per distinct run and seed -> figures -> report.
#
#   snakemake all --cores 1 --resources gpu=1         # paper profile (params.yaml `profile:`)
#   snakemake all --profile workflow/profiles/demo    # synthetic demo data, minutes on a CPU
#   snakemake all --profile workflow/profiles/slurm   # paper profile on a SLURM cluster
#
# `all` is the default target. Name it before `--resources`, which takes every word after it.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"  # `snakemake --report report.zip`: the tables and figures, captioned


include: "workflow/rules/common.smk"


# Only --config profile=NAME and forkserver=true: the jobs read params.yaml themselves.
check_command_line_config()

# Jobs run in forks of one process that has imported torch once (ugpcl.forkserver): set by the
# demo profile (`config: [..., forkserver=true]`), where jobs train for seconds.
use_forkserver(config.pop("forkserver", False))
# params.yaml with the profile in force merged in (`profile:`, or --config profile=NAME), checked.
CFG = resolve(config, profile=config.get("profile"))
validate(CFG, "workflow/schemas/params.schema.yaml")
# every method's hyper-parameters and the experiment matrix, before any job starts; an error names the key
# where params.yaml writes it (profiles.NAME.KEY where a profile sets it), and every profile is checked
check_study(CFG, raw=config)
check_same_as_params(CFG)
PROFILE = CFG["profile"]
RESULTS = rel(results_dir(CFG))  # results/<profile>: data/, runs/, logs/
RUNS = distinct_runs(CFG)  # one training job per run and seed, whatever tables a run serves
SEEDS = CFG["experiments"]["seeds"]


localrules:
    all,
    data_all,
    runs_all,
    report_all,


rule all:
    default_target: True
    input:
        [prepared_file(d) for d in datasets()],
        run_outputs(),
        figure_files(),
        report_files(),


onsuccess:
    say_where_the_report_is()


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
