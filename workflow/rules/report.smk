# Per-experiment tables (parquet) and the figures and tables built from them. An experiment's report
# (warmstart.reports.REPORTS) says which tables it reads and which files it writes; each figure and table
# is also a PNG, which `snakemake --report report.html` shows with its report's caption
# (workflow/report/captions/).


rule summarize:
    input:
        summary_inputs,
    output:
        summary=f"{RESULTS}/{{experiment}}/summary.parquet",
        epochs=f"{RESULTS}/{{experiment}}/epochs.parquet",
    wildcard_constraints:
        experiment=experiments_where(writes("summary")),
    params:
        runs_dir=f"{RESULTS}/runs",
        plan=lambda wc: EXPERIMENT_PLANS[wc.experiment],
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
        experiment=experiments_where(writes("rounds")),
    params:
        streams_dir=f"{RESULTS}/streams",
        plan=lambda wc: EXPERIMENT_PLANS[wc.experiment],
    log:
        f"{RESULTS}/logs/{{experiment}}/summarize.log",
    conda:
        ENV
    script:
        "../scripts/summarize_streams.py"


# One rule per report (warmstart.reports.REPORTS), report_<name>, for the experiments whose report it is:
# its PNG goes into the HTML report with the report's own caption, workflow/report/captions/<name>.rst
# (written from the report's registry entry: python -m warmstart.reports captions workflow/report/captions),
# which renders the experiment's caption (the params) and then the report's (what it shows, what it reads).
for _name, _report in REPORTS.items():

    rule:
        name:
            f"report_{_name}"
        input:
            unpack(report_input),
        output:
            **{ext: f"{FIGURES}/{{experiment}}.{ext}" for ext in _report.outputs},
            png=report(
                f"{FIGURES}/{{experiment}}.png",
                caption=f"../report/captions/{_name}.rst",
                category="Tables" if "csv" in _report.outputs else "Figures",
                labels={"experiment": "{experiment}"},
            ),
        wildcard_constraints:
            experiment=experiments_where(
                lambda n, name=_name: PLAN.experiment_config[n]["report"] == name
            ),
        params:
            report=lambda wc: PLAN.experiment_config[wc.experiment]["report"],
            caption=lambda wc: report_caption(wc.experiment),
        log:
            f"{RESULTS}/logs/{{experiment}}/report.log",
        conda:
            ENV
        script:
            "../scripts/report.py"


# The front page (figures/<...>/index.html): what the project answers, the headline numbers (Table 1's
# gap, the leaderboard's top arms, the online cost) and every figure and table with its caption, by
# relative links; open it in a browser. tests/test_html_report.py loads it in a headless Chromium.
rule index:
    input:
        lambda wc: [t for name in PLAN.experiments for t in report_targets(name)],
    output:
        html=f"{FIGURES}/index.html",
    params:
        entries=lambda wc: index_entries(),
        config_name=", ".join(map(str, workflow.config_settings.configfiles)) or "config.yaml",
    log:
        f"{RESULTS}/logs/index.log",
    conda:
        ENV
    script:
        "../scripts/report_index.py"
