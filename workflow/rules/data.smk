# Datasets are prepared once into a compact tensor file; splits are seeded index files. Both file names
# carry what they depend on (the dataset options' hash; dataset, seed and validation fraction), and
# data_dir and download are read by the script from the config: moving the data or allowing a download
# re-makes nothing.


rule prepare_dataset:
    output:
        f"{RESULTS}/data/{{dataset_key}}.pt",
    params:
        spec=lambda wc: json.dumps(dataclasses.asdict(PLAN.datasets[wc.dataset_key]), sort_keys=True),
    log:
        f"{RESULTS}/logs/data/{{dataset_key}}.log",
    conda:
        ENV
    script:
        "../scripts/prepare_dataset.py"


rule make_split:
    input:
        split_inputs,
    output:
        f"{RESULTS}/splits/{{split}}.pt",
    params:
        seed=lambda wc: PLAN.splits[wc.split][1],
        validation_fraction=lambda wc: PLAN.splits[wc.split][2],
    log:
        f"{RESULTS}/logs/splits/{{split}}.log",
    conda:
        ENV
    script:
        "../scripts/make_split.py"
