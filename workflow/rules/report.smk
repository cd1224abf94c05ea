# Stage 3: figures (Figure 3, Figure 4, training curves) and the report against the paper.


# No `conda:` or `container:` (snakemake --lint): see the prepare rule.
rule figures:
    input:
        logs=run_outputs(("log", "val")),
        checkpoints=figure_checkpoints(),
        code=REPORT_CODE,
    output:
        **reported(figure_outputs(CFG)),
    log:
        f"{RESULTS}/logs/figures.log",
    threads: 2
    params:
        profile=PROFILE,
    shell:
        "OMP_NUM_THREADS={threads} ugpcl figures --profile {params.profile} > {log} 2>&1"


# No `conda:` or `container:` (snakemake --lint): see the prepare rule.
rule report:
    input:
        results=run_outputs(("run_json", "summary", "summary_last")),
        figures=rules.figures.output,
        paper=[f"{rel(PAPER_DIR)}/{t}.csv" for t in TABLES],
        code=REPORT_CODE,
    output:
        **reported(report_outputs(CFG)),
    log:
        f"{RESULTS}/logs/report.log",
    params:
        profile=PROFILE,
        # what the paired tests compare: a change rebuilds the report (Snakemake's params trigger), no run
        paired_with=CFG["experiments"]["table1"]["paired_with"],
    shell:
        "ugpcl report --profile {params.profile} > {log} 2>&1"


rule report_all:
    input:
        rules.report.output,
