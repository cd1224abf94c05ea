# Stage 2: one training job per distinct run and seed; it evaluates the run when it finishes.
# The run directory's progress/ folder (resume point, best checkpoint so far, live logs) is
# deliberately not an output: Snakemake deletes the outputs of a failed job and again before it
# reruns it, and progress/ must survive so that the rerun continues where the failure stopped.
# The outputs are published from it when training completes (ugpcl.engine.trainer, runfiles).


rule train:
    input:
        lambda w: prepared_file(run_by_id(w.run).dataset),
    output:
        **{name: f"{RESULTS}/runs/{{run}}/seed{{seed}}/{path}" for name, path in RUN_FILES.items()},
    log:
        f"{RESULTS}/logs/train/{{run}}/seed{{seed}}.log",
    params:
        # rerun when what this run trains with changes, and only then (Snakemake's params trigger)
        settings=run_digest,
    wildcard_constraints:
        run=r"[A-Za-z0-9_.\-]+",
        seed=r"\d+",
    threads: 4
    resources:
        gpu=1,
    shell:
        "OMP_NUM_THREADS={threads} {UGPCL} train --profile {PROFILE} --run {wildcards.run} --seed {wildcards.seed}"
        " --no-progress > {log} 2>&1"


rule runs_all:
    input:
        run_outputs(),
