# Per-experiment tables (parquet) and the figures and tables built from them.


rule summarize:
    input:
        summary_inputs,
    output:
        summary=f"{RESULTS}/{{experiment}}/summary.parquet",
        epochs=f"{RESULTS}/{{experiment}}/epochs.parquet",
    params:
        runs_dir=f"{RESULTS}/runs",
        planned=planned_json,
    log:
        f"{RESULTS}/logs/{{experiment}}/summarize.log",
    conda:
        ENV
    script:
        "../scripts/summarize.py"


rule table:
    input:
        f"{RESULTS}/{{experiment}}/summary.parquet",
    output:
        csv=f"{FIGURES}/{{experiment}}.csv",
        md=f"{FIGURES}/{{experiment}}.md",
        pdf=f"{FIGURES}/{{experiment}}.pdf",
    wildcard_constraints:
        experiment=experiments_with_report("table"),
    log:
        f"{RESULTS}/logs/{{experiment}}/table.log",
    conda:
        ENV
    script:
        "../scripts/table.py"


rule curves:
    input:
        f"{RESULTS}/{{experiment}}/epochs.parquet",
    output:
        pdf=f"{FIGURES}/{{experiment}}.pdf",
    wildcard_constraints:
        experiment=experiments_with_report("curves"),
    log:
        f"{RESULTS}/logs/{{experiment}}/curves.log",
    conda:
        ENV
    script:
        "../scripts/curves.py"
