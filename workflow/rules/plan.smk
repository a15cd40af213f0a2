# The plan as files (warmstart.plan.plan_files says which file holds what), written by the jobs below and never
# by parsing the workflow, so that a dry run, --lint or --report writes nothing. None of these jobs can make
# a finished run look out of date: a plan job runs only where its file is missing (or, for a stream, where
# its planned content changed), an experiment's plan file is named by its content, and the jobs file (which
# holds each training job's runs) is an `ancient` input.
#
# plan_stream and plan_experiment write their content (params) through a template that is just that
# content: such a job runs inside Snakemake's own process, in milliseconds, and no log shows the content as
# a shell command.
PLAN_TEMPLATE = ancient(workflow.source_path("../templates/plan_file.json.j2"))


# A stream's spec holds its probes, which its name does not: changing them changes the content, a change
# of params, and so trains the stream again.
rule plan_stream:
    input:
        PLAN_TEMPLATE,
    output:
        plan_path("streams", "{stream}"),
    log:
        f"{RESULTS}/logs/plan/streams/{{stream}}.log",
    params:
        content=lambda wc: spec_json(planned("streams", wc.stream)),
    localrule: True
    template_engine:
        "jinja2"


rule plan_experiment:
    input:
        PLAN_TEMPLATE,
    output:
        plan_path("experiments", "{experiment_plan}"),
    log:
        f"{RESULTS}/logs/plan/experiments/{{experiment_plan}}.log",
    params:
        content=lambda wc: planned_experiment_content(wc.experiment_plan),
    localrule: True
    template_engine:
        "jinja2"


# The jobs file says what the current config asks of each training job: its runs (their numbers, and what
# to measure and keep beyond them) and its speed options. This job creates it where it is missing;
# `onstart` (Snakefile) brings it up to date, only when jobs are about to run, so that no dry run of
# another config rewrites it. No params: a changed request must not re-run this job, whose
# run would hold back every training job downstream of it until the next invocation.
rule plan_jobs:
    output:
        JOBS_FILE,
    log:
        f"{RESULTS}/logs/plan/jobs.log",
    localrule: True
    run:
        write_text_if_changed(output[0], jobs_content())

