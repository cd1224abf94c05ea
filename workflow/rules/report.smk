# Stage 3: figures (Figure 3, Figure 4, training curves) and the report against the paper.


rule figures:
    input:
        logs=run_outputs(("log", "val")),
        checkpoints=figure_checkpoints(),
        code=REPORT_CODE,
    output:
        figure_files(),
    log:
        f"{RESULTS}/logs/figures.log",
    threads: 2
    shell:
        "OMP_NUM_THREADS={threads} {UGPCL} figures --profile {PROFILE} > {log} 2>&1"


rule report:
    input:
        results=run_outputs(("run_json", "summary", "summary_last")),
        figures=rules.figures.output,
        paper=[f"{rel(PAPER_DIR)}/{t}.csv" for t in TABLES],
        code=REPORT_CODE,
    output:
        report_files(),
    log:
        f"{RESULTS}/logs/report.log",
    shell:
        "{UGPCL} report --profile {PROFILE} > {log} 2>&1"


rule report_all:
    input:
        rules.report.output,
