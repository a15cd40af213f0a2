# Per-experiment tables (parquet) and the figures and tables built from them.


def summary_inputs(wildcards):
    planned = PLAN.experiments[wildcards.experiment]
    return [run_path(p.spec, f) for p in planned for f in ("metrics.json", "epochs.parquet")]


rule summarize:
    input:
        summary_inputs,
    output:
        summary=f"{RESULTS}/{{experiment}}/summary.parquet",
        epochs=f"{RESULTS}/{{experiment}}/epochs.parquet",
    params:
        runs_dir=f"{RESULTS}/runs",
        planned=lambda wc: json.dumps(
            [
                {"spec": p.spec.to_dict(), "labels": p.labels}
                for p in PLAN.experiments[wc.experiment]
            ]
        ),
    log:
        f"{RESULTS}/logs/{{experiment}}/summarize.log",
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
    script:
        "../scripts/curves.py"
