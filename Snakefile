# warmstart: the experiments of Ash & Adams, "On the Difficulty of Warm-Starting Neural Network
# Training", as file targets. The library (pkg/warmstart) decides what each run is; this workflow only
# decides which files exist and which job writes them.
#
#   snakemake --cores 8 figures/table1.pdf                  # one target
#   snakemake --cores 2 --configfile config/demo.yaml       # everything in a config
#   snakemake --profile profiles/slurm figures/table1.pdf   # on a SLURM cluster

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the default; a --configfile given on the command line replaces it rather than being
# merged into it, so config/demo.yaml runs only the demo's experiments.
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


sys.path.insert(0, str(Path(workflow.basedir) / "pkg"))  # the library, also where it is not pip-installed
try:
    from warmstart.core.errors import ConfigError
    from warmstart.jobs import job_server
    from warmstart.plan.config_check import build_plan
    from warmstart.plan.job_blocks import plan_blocks, plan_stream_blocks
except ImportError as e:
    raise WorkflowError(
        f"cannot import the warmstart library ({e}): run `make venv` or `pip install -e .` first"
    )

# The config is checked before any job runs, once: first against the schema (a bad key or value is named
# in one line; the schema's defaults are filled in), then by the planner (labels defined, names known to
# the registries, options fitting their entries): warmstart.plan.config_check.
SCHEMA = workflow.source_path("workflow/schemas/config.schema.yaml")
try:
    PLAN = build_plan(config, SCHEMA)
    # Training jobs: stacks of the runs that differ only in seed (in fixed blocks), init strategy and
    # parent (warmstart.plan.job_blocks.stack_key), every other run alone. A pure function of the
    # config, so job names are the same before, during and after training.
    BLOCKS = plan_blocks(PLAN, config["stack_seeds"], config["stacks_per_job"])
    STREAM_BLOCKS = plan_stream_blocks(PLAN, config["streams_per_job"])
except ConfigError as e:
    raise WorkflowError(f"config error: {e}")

if workflow.non_local_exec:
    # On a cluster the scheduler places GPU jobs; the one-slot limit of profiles/default (meant for a
    # local machine) must not throttle submission to one GPU job at a time.
    workflow.register_resource("gpu_slots", sys.maxsize)


include: "workflow/rules/common.smk"


# The HTML report's front page (`snakemake --report report.html`): what the workflow is, and the config.
report: "workflow/report/workflow.rst"


include: "workflow/rules/plan.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True


# When jobs are about to run (never in a dry run): the jobs file and status.json are brought up to date
# (workflow/rules/plan.smk), and on a local run the job server starts, so each rule script forks from one
# process that imported torch and pandas (and the libraries of the config's models, e.g. torchvision) once
# instead of importing them itself (config `job_server`).
onstart:
    if Path(JOBS_FILE).exists():
        write_text_if_changed(JOBS_FILE, jobs_content())
    write_text_if_changed(STATUS_FILE, status_content())
    if config["job_server"] and not workflow.non_local_exec:
        job_server.start(f"{RESULTS}/logs/job_server.log", preload=PLAN.model_libraries)
    else:
        job_server.forget_inherited()


onsuccess:
    job_server.stop_all()


onerror:
    job_server.stop_all()
