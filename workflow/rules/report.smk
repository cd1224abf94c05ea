# Stage 3: figures (Figure 3, Figure 4, training curves) and the report against the paper.


def reported(outputs):
    """Rule outputs by name (ugpcl.report.tables.figure_outputs, report_outputs), each flagged for
    `snakemake --report`: a category, a subcategory per table or figure, a caption in workflow/report/."""
    flagged = {}
    for name, path in outputs.items():
        table = re.match(r"table(\d+)_", name)
        if table:
            where = ("Tables", f"Table {table[1]}", f"table{table[1]}.rst")
        elif name.startswith("curves"):
            where = ("Figures", "Training curves", "curves.rst")
        elif name.startswith("figure"):
            where = ("Figures", f"Figure {name.removeprefix('figure')}", f"{name}.rst")
        else:  # metrics.json, report.html
            where = ("Report", None, "report.rst")
        category, subcategory, caption = where
        flagged[name] = report(rel(path), caption=f"../report/{caption}", category=category, subcategory=subcategory)
    return flagged


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
    shell:
        "ugpcl report --profile {params.profile} > {log} 2>&1"


rule report_all:
    input:
        rules.report.output,
