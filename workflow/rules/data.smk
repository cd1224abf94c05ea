# Stage 1: prepared HDF5 data, one file per dataset (download or generate, then preprocess).
from ugpcl.data.prepared import FORMAT_VERSION


rule prepare:
    input:
        prepare_inputs,
    output:
        f"{RESULTS}/data/{{dataset}}.h5",
    log:
        f"{RESULTS}/logs/prepare/{{dataset}}.log",
    params:
        # rerun when the dataset's settings or the file format change (Snakemake's params trigger)
        settings=lambda w: digest([CFG["data"][w.dataset], CFG["data"]["image_size"], CFG["data"]["demo"]]),
        format_version=FORMAT_VERSION,
    wildcard_constraints:
        dataset=dataset_pattern(),
    threads: 2
    shell:
        "{UGPCL} prepare {wildcards.dataset} --profile {PROFILE} > {log} 2>&1"


rule data_all:
    input:
        [prepared_file(d) for d in datasets()],
