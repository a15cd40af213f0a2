# One job per training run. Its inputs (data, split, and the parent's weights for a warm start) and its
# output directory come from the run's spec. The params are functions of the output path (a run's
# directory is named by the hash of its spec), which Snakemake's params trigger leaves out: a finished
# run is re-made when its inputs are newer, never because it moved between a stack job and a single
# job, or because `device` or `checkpoint_every_s` changed (neither changes a result).


rule train_run:
    input:
        unpack(run_inputs),
    output:
        spec=f"{RESULTS}/runs/{{run}}/spec.json",
        metrics=f"{RESULTS}/runs/{{run}}/metrics.json",
        epochs=f"{RESULTS}/runs/{{run}}/epochs.parquet",
        model=f"{RESULTS}/runs/{{run}}/model.pt",  # written last
    params:
        spec=lambda wildcards, output: planned_spec(wildcards.run).to_json(),
        device=lambda wildcards, output: config["device"],
        checkpoint_every_s=lambda wildcards, output: config["checkpoint_every_s"],
    threads: config["resources"]["train_threads"]
    resources:
        gpu=config["resources"]["train_gpu"],
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime_min"],
    log:
        f"{RESULTS}/runs/{{run}}/train.log",
    conda:
        ENV
    wildcard_constraints:
        run=single_run_pattern(),
    script:
        "../scripts/train_run.py"


# One job per stack (see STACKS in common.smk): the same files per run as train_run writes. These
# rules are made in a loop because a stack's outputs, one directory per seed, are a list, not a pattern.
for stack_name, stack_specs in STACKS.items():

    rule:
        name:
            f"train_stack_{stack_name}"
        input:
            **stack_inputs(stack_specs),
        output:
            [run_path(spec, f) for spec in stack_specs for f in RUN_FILES],
        params:
            specs=lambda wildcards, output, specs=stack_specs: json.dumps([s.to_dict() for s in specs]),
            device=lambda wildcards, output: config["device"],
        threads: config["resources"]["train_threads"]
        resources:
            gpu=config["resources"]["train_gpu"],
            mem_mb=config["resources"]["train_mem_mb"],
            runtime=config["resources"]["train_runtime_min"],
        log:
            f"{RESULTS}/stacks/{stack_name}.log",
        conda:
            ENV
        script:
            "../scripts/train_stack.py"


rule train_stream:
    input:
        unpack(stream_inputs),
    output:
        spec=f"{RESULTS}/streams/{{stream}}/spec.json",
        rounds=f"{RESULTS}/streams/{{stream}}/rounds.parquet",
    params:
        spec=lambda wildcards, output: json.dumps(planned_spec(wildcards.stream, "streams").to_dict()),
        device=lambda wildcards, output: config["device"],
    threads: config["resources"]["train_threads"]
    resources:
        gpu=config["resources"]["train_gpu"],
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime_min"],
    log:
        f"{RESULTS}/streams/{{stream}}/train.log",
    conda:
        ENV
    script:
        "../scripts/train_stream.py"
