# Stage 2: one training job per distinct run and seed; it evaluates the run when it finishes.
# The run directory's progress/ folder (resume point, best checkpoint so far, live logs) is
# deliberately not an output: Snakemake deletes the outputs of a failed job and again before it
# reruns it, and progress/ must survive so that the rerun continues where the failure stopped.
# The outputs are published from it when training completes (ugpcl.engine.trainer, runfiles).


# The benchmark file (the job's wall time, and memory and CPU time of its processes; `snakemake --report`
# shows it) is not needed to skip the job: Snakemake asks for a job's benchmark only when its rule is a
# target rule (a rule with wildcards, like this one, cannot be), never for its log, and otherwise only
# for the outputs later jobs read (snakemake/dag.py, update_needrun); so run directories restored
# without logs/ and benchmarks/ (DVC) are not retrained. The memory and CPU columns count the job's
# own processes: with the fork server (demo profile) the training runs in a fork of the server instead.
# No `conda:` or `container:` (snakemake --lint): see the prepare rule.
rule train:
    input:
        lambda w: prepared_file(run_by_id(w.run).dataset),
    output:
        **{name: f"{RESULTS}/runs/{{run}}/seed{{seed}}/{path}" for name, path in RUN_FILES.items()},
    log:
        f"{RESULTS}/logs/train/{{run}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run}}/seed{{seed}}.tsv"
    wildcard_constraints:
        run=r"[A-Za-z0-9_.\-]+",
        seed=r"\d+",
    threads: 4
    resources:
        gpu=1,
    params:
        profile=PROFILE,
        # rerun when what this run trains with changes, and only then (Snakemake's params trigger)
        settings=run_digest,
    shell:
        "OMP_NUM_THREADS={threads} ugpcl train --profile {params.profile}"
        " --run {wildcards.run} --seed {wildcards.seed} --no-progress > {log} 2>&1"


rule runs_all:
    input:
        run_outputs(),
