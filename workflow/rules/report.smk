# Per-experiment tables (parquet) and the figures and tables built from them.


rule summarize:
    input:
        summary_inputs,
    output:
        summary=f"{RESULTS}/{{experiment}}/summary.parquet",
        epochs=f"{RESULTS}/{{experiment}}/epochs.parquet",
    wildcard_constraints:
        experiment=experiments_where(lambda n: not is_online(n)),
    params:
        runs_dir=f"{RESULTS}/runs",
        planned=planned_json,
    log:
        f"{RESULTS}/logs/{{experiment}}/summarize.log",
    conda:
        ENV
    script:
        "../scripts/summarize.py"


rule summarize_streams:
    input:
        rounds_inputs,
    output:
        rounds=f"{RESULTS}/{{experiment}}/rounds.parquet",
    wildcard_constraints:
        experiment=experiments_where(is_online),
    params:
        streams_dir=f"{RESULTS}/streams",
        planned=planned_json,
    log:
        f"{RESULTS}/logs/{{experiment}}/summarize.log",
    conda:
        ENV
    script:
        "../scripts/summarize_streams.py"


rule table:
    input:
        f"{RESULTS}/{{experiment}}/summary.parquet",
    output:
        csv=f"{FIGURES}/{{experiment}}.csv",
        md=f"{FIGURES}/{{experiment}}.md",
        pdf=f"{FIGURES}/{{experiment}}.pdf",
    wildcard_constraints:
        experiment=experiments_where(
            lambda n: PLAN.experiment_config[n]["report"] == "table"
        ),
    log:
        f"{RESULTS}/logs/{{experiment}}/table.log",
    conda:
        ENV
    script:
        "../scripts/table.py"


rule figure:
    input:
        figure_input,
    output:
        pdf=f"{FIGURES}/{{experiment}}.pdf",
    wildcard_constraints:
        experiment=experiments_where(
            lambda n: PLAN.experiment_config[n]["report"] != "table"
        ),
    params:
        report=lambda wc: PLAN.experiment_config[wc.experiment]["report"],
    log:
        f"{RESULTS}/logs/{{experiment}}/figure.log",
    conda:
        ENV
    script:
        "../scripts/figure.py"
