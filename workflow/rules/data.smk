# Stage 1: prepared HDF5 data, one file per dataset (download or generate, then preprocess).


rule prepare:
    input:
        prepare_inputs,
    output:
        f"{RESULTS}/data/{{dataset}}.h5",
    log:
        f"{RESULTS}/logs/prepare/{{dataset}}.log",
    params:
        # rerun when the dataset's settings or the file format change (Snakemake's params trigger)
        settings=data_digest,
    wildcard_constraints:
        dataset=dataset_pattern(),
    threads: 2
    shell:
        "{UGPCL} prepare {wildcards.dataset} --profile {PROFILE} > {log} 2>&1"


rule data_all:
    input:
        [prepared_file(d) for d in datasets()],
