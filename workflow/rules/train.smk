# Training. A job trains one block (BLOCKS in the Snakefile): a single run (train_run), or stacks of runs
# that differ only in seed (one block of `stack_seeds` seeds), init strategy, parent, learning rate,
# loss-term coefficients and unit-reset options (train_stack, warmstart.plan.job_blocks.stack_key). It
# reads its runs' specs from the jobs file and leaves each run's files in a sub-directory of its own
# (temporary) directory; one publish job per run then links them all into results/runs/<run>/ (a shell
# command: a `run:` block would cost a re-parse of the workflow per run, a script its source loaded per
# job in every dry run). So every run has one producer whatever trained it. A job that runs again for
# some of its runs takes the others' published files as they are (warmstart.jobs.train_runs.execute_block),
# unless the invocation forces jobs (the jobs file's reuse_published). The rule names are fixed:
# --forcerun, --until and a profile's set-resources address train_run, train_stack and train_stream by
# name.


rule train_run:
    input:
        unpack(run_block_inputs),
    output:
        temp(directory(f"{RESULTS}/train/runs/{{run}}")),
    threads: config["resources"]["train_threads"]
    resources:
        gpu=config["resources"]["train_gpu"],
        gpu_slots=GPU_SLOTS_PER_JOB,
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime_min"],
    log:
        f"{RESULTS}/logs/runs/{{run}}.log",
    conda:
        ENV
    script:
        "../scripts/train.py"


rule train_stack:
    input:
        unpack(stack_block_inputs),
    output:
        temp(directory(f"{RESULTS}/train/stacks/{{stack}}")),
    threads: config["resources"]["train_threads"]
    resources:
        gpu=config["resources"]["train_gpu"],
        gpu_slots=GPU_SLOTS_PER_JOB,
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime_min"],
    log:
        f"{RESULTS}/logs/stacks/{{stack}}.log",
    conda:
        ENV
    script:
        "../scripts/train.py"


# One publish job per run, for all its files: one rule per set of files that runs of this config have
# (PUBLISHED_FILE_SETS: the files of every run with the probes' tables, the optimiser state and the
# checkpoints asked of it), each for exactly the runs that have that set. A job of its own for each
# extra file (a probe's table, a checkpoint, the optimiser state) was 1,127 more of the paper config's
# jobs (4,734 instead of 3,607), and so of its dry run's time.
for _files in PUBLISHED_FILE_SETS:

    rule:
        name:
            publish_rule_name(_files)
        input:
            trained_dir,
        output:
            [f"{RESULTS}/runs/{{run}}/{f}" for f in _files],
        wildcard_constraints:
            run=published_runs_pattern(_files),
        log:
            f"{RESULTS}/logs/publish/{{run}}.log",
        localrule: True
        conda:
            ENV
        shell:
            PUBLISH


rule train_stream:
    input:
        unpack(stream_inputs),
    output:
        spec=f"{RESULTS}/streams/{{stream}}/spec.json",
        rounds=f"{RESULTS}/streams/{{stream}}/rounds.parquet",
    wildcard_constraints:
        stream=ALONE_STREAMS,
    threads: config["resources"]["train_threads"]
    resources:
        gpu=config["resources"]["train_gpu"],
        gpu_slots=GPU_SLOTS_PER_JOB,
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime_min"],
    log:
        f"{RESULTS}/streams/{{stream}}/train.log",
    conda:
        ENV
    script:
        "../scripts/train_stream.py"


# Several streams in one job (streams_per_job > 1): train_streams leaves each stream's files in a
# sub-directory of its (temporary) directory, and publish_stream links them into results/streams/<stream>/,
# as publish_run does for runs. A stream's resume state lives in results/resume/streams/ meanwhile.
rule train_streams:
    input:
        unpack(stream_block_inputs),
    output:
        temp(directory(f"{RESULTS}/train/streams/{{streams}}")),
    threads: config["resources"]["train_threads"]
    resources:
        gpu=config["resources"]["train_gpu"],
        gpu_slots=GPU_SLOTS_PER_JOB,
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime_min"],
    log:
        f"{RESULTS}/logs/streams/{{streams}}.log",
    conda:
        ENV
    script:
        "../scripts/train_streams.py"


rule publish_stream:
    input:
        trained_stream_dir,
    output:
        spec=f"{RESULTS}/streams/{{stream}}/spec.json",
        rounds=f"{RESULTS}/streams/{{stream}}/rounds.parquet",
    wildcard_constraints:
        stream=GROUPED_STREAMS,
    log:
        f"{RESULTS}/logs/publish/{{stream}}.log",
    localrule: True
    conda:
        ENV
    shell:
        PUBLISH_STREAM
