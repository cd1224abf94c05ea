# Stage 1: prepared HDF5 data, one file per dataset (download or generate, then preprocess).


# No `conda:` or `container:` (snakemake --lint asks for one per rule): every job runs this checkout's
# `ugpcl` with the workflow's own interpreter, whose packages constraints.txt pins (README "Install").
rule prepare:
    input:
        prepare_inputs,
    output:
        f"{RESULTS}/data/{{dataset}}.h5",
    log:
        f"{RESULTS}/logs/prepare/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=dataset_pattern(),
    threads: 2
    params:
        profile=PROFILE,
        # rerun when the dataset's settings or the file format change (Snakemake's params trigger)
        settings=data_digest,
    shell:
        "ugpcl prepare {wildcards.dataset} --profile {params.profile} > {log} 2>&1"


rule data_all:
    input:
        [prepared_file(d) for d in datasets()],
