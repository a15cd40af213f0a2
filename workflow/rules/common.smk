# Paths of every file the workflow writes, and the input functions of the rules, all derived from the
# plan. Runs live in directories named by their content hash (RunSpec.name), so an edited condition
# gets a new directory and an unchanged one keeps its results.
#
# What a training job must know reaches it through files, never through params: the plan's small JSON
# files under <results>/plan/ (warmstart.plan.plan_files says which file holds what, and why none of them
# can make a finished run look out of date), written by the jobs of workflow/rules/plan.smk, and a job
# reads its specs from those input files. Parsing the workflow writes nothing. Execution settings that do
# not change results reach a job untracked: device and checkpoint_every_s read by the scripts from the config.
import dataclasses
import json
import re
import shlex
from pathlib import Path

from warmstart.plan.experiment_kinds import EXPERIMENT_KINDS
from warmstart.plan.planned import run_split_name
from warmstart.plan.wildcards import hash_starts_pattern, names_pattern
from warmstart.components.inits import STRATEGIES
from warmstart.core.io import write_text_if_changed
from warmstart.plan.plan_files import (
    RUN_FILES,
    experiment_file_name,
    experiment_json,
    jobs_json,
    probe_file,
    run_file_names,
    spec_json,
)
from warmstart.reports import REPORTS, caption, first_paragraph
from warmstart.core.spec import StreamSpec

RESULTS = config["results_dir"]
FIGURES = config["figures_dir"]
ENV = "../envs/warmstart.yaml"
# A local GPU training job takes one of the gpus x jobs_per_gpu card slots (the run pins it to a card,
# warmstart.jobs.gpu_slots); --resources gpu_slots=N says how many run at once. CPU jobs take none.
_res = config["resources"]
GPU_SLOTS_PER_JOB = 1 if _res["train_gpu"] > 0 and _res["gpus"] > 0 else 0
# The publish rules (publish_run..., publish_stream) link each output from the training job's directory
# (workflow/scripts/publish.sh: a hard link or a copy, through a temporary name and one rename). A script
# file, so that the command Snakemake formats and prints for each of the thousands of publish jobs is a line.
PUBLISH_SCRIPT = shlex.quote(str(Path(workflow.basedir) / "workflow" / "scripts" / "publish.sh"))
PUBLISH = f"bash {PUBLISH_SCRIPT} runs {{wildcards.run:q}} {{input:q}} {{output:q}} > {{log:q}} 2>&1"
PUBLISH_STREAM = f"bash {PUBLISH_SCRIPT} streams {{wildcards.stream:q}} {{input:q}} {{output:q}} > {{log:q}} 2>&1"


# The runs of each set of files a run's directory has (plan_files.run_file_names, in the order written):
# one publish rule each (workflow/rules/train.smk)
PUBLISHED_FILE_SETS = {}
for _spec in PLAN.runs.values():
    PUBLISHED_FILE_SETS.setdefault(tuple(run_file_names(_spec)), []).append(_spec)


def publish_rule_name(files):
    """publish_run for a run's four files, publish_run_with_<extras> for more (e.g. with_init_distance,
    with_optimizer, with_validation_epoch25_epoch50)."""
    extras = [re.sub(r"\W", "_", Path(f).stem) for f in files if f not in RUN_FILES]
    return "_".join(["publish_run", *(["with"] if extras else []), *extras])


def published_runs_pattern(files):
    """The wildcard pattern of the runs of one set of files (PUBLISHED_FILE_SETS): theirs, and no other
    planned run's (warmstart.plan.wildcards: 3 KB for the paper config's 1,005 runs with one probe, against
    13 KB for their names, which Snakemake scans whenever it names a job's files)."""
    others = [s.run_id for f, specs in PUBLISHED_FILE_SETS.items() if f != files for s in specs]
    return hash_starts_pattern([s.run_id for s in PUBLISHED_FILE_SETS[files]], others)


# Without these, `results/runs/<run>/epochs.parquet` would also match `results/{experiment}/epochs.parquet`
wildcard_constraints:
    experiment=names_pattern(list(PLAN.experiments)),
    run="[^/]+",
    stack="[^/]+",
    stream="[^/]+",
    streams="[^/]+",
    dataset_key="[^/]+",
    probe="[^/]+",
    split="[^/]+",
    epoch="[0-9]+",
    experiment_plan="[^/]+",


def data_path(spec):
    return f"{RESULTS}/data/{spec.dataset.key}.pt"


def split_path(spec):
    return f"{RESULTS}/splits/{run_split_name(spec)}.pt"


def run_path(spec, file):
    return f"{RESULTS}/runs/{spec.name}/{file}"


def stream_path(spec, file):
    return f"{RESULTS}/streams/{spec.name}/{file}"


def plan_path(kind, name):
    return f"{RESULTS}/plan/{kind}/{name}.json"


def block_dir(block):
    """Where a training job leaves its runs (one sub-directory each) until they are published."""
    kind = "stacks" if block.stacked else "runs"
    return f"{RESULTS}/train/{kind}/{block.name}"


RUN_BLOCK = {spec.name: block for block in BLOCKS.values() for spec in block.specs}
STREAM_BLOCK = {spec.name: name for name, specs in STREAM_BLOCKS.items() for spec in specs}
# the stream's files come from train_stream (a job of its own) or publish_stream (from a job of several)
GROUPED_STREAMS = names_pattern(list(STREAM_BLOCK))
ALONE_STREAMS = names_pattern([n for n in PLAN.streams if n not in STREAM_BLOCK])
JOBS_FILE = f"{RESULTS}/plan/jobs.json"
# experiment -> its plan file, and the file's name -> its content. The file is named by its content and
# written by the plan_experiment job, so no other config's plan ever rewrites it. A summary must re-run
# when its experiment's plan changes (runs added): the plan's name is a param of the summary (a change of
# params re-runs it under the profile's rerun-triggers) and the file an `ancient` input, so that writing
# the plan file, a job of this invocation, cannot make a finished summary look out of date by its mtime.
EXPERIMENT_PLANS = {}
_EXPERIMENT_CONTENTS = {}
for _name, _planned in PLAN.experiments.items():
    _content = experiment_json(_planned)
    _file_name = experiment_file_name(_name, _content)
    EXPERIMENT_PLANS[_name] = plan_path("experiments", _file_name)
    _EXPERIMENT_CONTENTS[_file_name] = _content


def planned_experiment_content(file_name):
    try:
        return _EXPERIMENT_CONTENTS[file_name]
    except KeyError:
        raise WorkflowError(f"{file_name!r} is not the plan of an experiment of the current config")


def jobs_content():
    """The jobs file as the current config asks: per job its speed options and its runs (each run's
    numbers and requests); and whether this invocation's training jobs may reuse published runs and streams."""
    return jobs_json(
        {
            **{name: block.specs[0].engine for name, block in BLOCKS.items()},
            **{name: spec.round.engine for name, spec in PLAN.streams.items()},
        },
        {name: list(block.specs) for name, block in BLOCKS.items()},
        reuse_published=not forced_invocation(),
    )


def forced_invocation():
    """Whether this invocation forces jobs to run (--forceall, --forcerun, --force): then every
    training job trains all its runs, published or not (after a change of the library's science)."""
    settings = workflow.dag_settings
    return bool(settings.forceall or settings.forcerun or settings.forcetargets)


# What `make status` counts (warmstart.jobs.status): each planned run's or stream's result, log and resume
# files, relative to the results directory.
def _status_unit(spec):
    if isinstance(spec, StreamSpec):
        out = f"streams/{spec.name}"
        if spec.name in STREAM_BLOCK:
            block = STREAM_BLOCK[spec.name]
            return {
                "done": f"{out}/rounds.parquet",
                "log": f"logs/streams/{block}.log",
                "resume": f"resume/streams/{spec.name}.pt",
            }
        return {"done": f"{out}/rounds.parquet", "log": f"{out}/train.log", "resume": f"{out}/state.pt"}
    block = RUN_BLOCK[spec.name]
    kind = "stacks" if block.stacked else "runs"
    return {
        "done": f"runs/{spec.name}/metrics.json",
        "log": f"logs/{kind}/{block.name}.log",
        "resume": f"resume/{block.name}.pt",
    }


STATUS_FILE = f"{RESULTS}/plan/status.json"


def status_content():
    return json.dumps({n: [_status_unit(p.spec) for p in ps] for n, ps in PLAN.experiments.items()})


def planned(table, name):
    try:
        return getattr(PLAN, table)[name]
    except KeyError:
        raise WorkflowError(
            f"{name!r} is not planned by the current config; its directory name must come "
            "from an experiment in the config"
        )


def result_tables(experiment):
    """The experiment's parquet tables (``Plan.tables``): summary and epochs of its runs, rounds of its
    streams, or both."""
    return {n: f"{RESULTS}/{experiment}/{n}.parquet" for n in PLAN.tables(experiment)}


def writes(table):
    return lambda experiment: table in result_tables(experiment)


# -- input functions -----------------------------------------------------------------------------------


def split_inputs(wildcards):
    dataset, _, _ = PLAN.splits[wildcards.split]
    return f"{RESULTS}/data/{dataset.key}.pt"


def parent_inputs(spec, suffix=""):
    """The files a child run starts from: its parent's weights (final, or a checkpoint's), and the
    parent's optimiser state when the child continues it. ``ancient``: a parent is trained again only
    to add what a config asks of it (a probe, a checkpoint), to the same bits (docs/caching.md, "Same spec, same
    bits"), so its files' new modification time must not re-train its children; a parent whose numbers
    change is another run, with another name, and so are its children."""
    if spec.parent is None:
        return {}
    model = (
        "model.pt"
        if spec.parent_epoch is None
        else f"checkpoints/epoch{spec.parent_epoch}.pt"
    )
    inputs = {f"parent{suffix}": ancient(run_path(spec.parent, model))}
    if "optimizer" in STRATEGIES[spec.init.strategy].parent_files(spec.init.options):
        inputs[f"parent_optimizer{suffix}"] = ancient(run_path(spec.parent, "optimizer.pt"))
    return inputs


def block_inputs(block):
    """Named inputs of a training job: the data and the jobs file (its runs' specs), then per run its
    split and parent."""
    inputs = {"data": data_path(block.specs[0]), "jobs": ancient(JOBS_FILE)}
    for i, spec in enumerate(block.specs):
        inputs[f"split{i}"] = split_path(spec)
        inputs.update(parent_inputs(planned("runs", spec.name), suffix=str(i)))
    return inputs


def run_block_inputs(wildcards):
    return block_inputs(planned_block(wildcards.run, stacked=False))


def stack_block_inputs(wildcards):
    return block_inputs(planned_block(wildcards.stack, stacked=True))


def planned_block(name, stacked):
    block = BLOCKS.get(name)
    if block is None or block.stacked != stacked:
        raise WorkflowError(f"{name!r} is not a planned {'stack' if stacked else 'single run'}")
    return block


def trained_dir(wildcards):
    """The training job's directory that holds this run's files."""
    return block_dir(RUN_BLOCK[planned("runs", wildcards.run).name])


def stream_block_inputs(wildcards):
    """Named inputs of a job of several streams: the data, then per stream its planned spec and split."""
    specs = STREAM_BLOCKS[wildcards.streams]
    inputs = {"data": data_path(specs[0].round), "jobs": ancient(JOBS_FILE)}
    for i, spec in enumerate(specs):
        inputs[f"spec{i}"] = plan_path("streams", spec.name)
        inputs[f"split{i}"] = split_path(spec)
    return inputs


def trained_stream_dir(wildcards):
    return f"{RESULTS}/train/streams/{STREAM_BLOCK[wildcards.stream]}"


def stream_inputs(wildcards):
    spec = planned("streams", wildcards.stream)
    return {
        "spec": plan_path("streams", spec.name),
        "jobs": ancient(JOBS_FILE),
        "data": data_path(spec.round),
        "split": split_path(spec),
    }


def summary_inputs(wildcards):
    # metrics.json stands for the run's files, which one job publishes (one input per run keeps the dry run
    # of a large config fast); a probe the experiment measures is named too: Snakemake re-runs a job for
    # a missing output only where another job asks for it, so a probe added to a finished run trains it again
    inputs = [ancient(EXPERIMENT_PLANS[wildcards.experiment])]
    for p in PLAN.experiments[wildcards.experiment]:
        if not isinstance(p.spec, StreamSpec):
            inputs.append(run_path(p.spec, "metrics.json"))
            inputs += [run_path(p.spec, probe_file(probe)) for probe in p.spec.probes]
    return inputs


def rounds_inputs(wildcards):
    return [ancient(EXPERIMENT_PLANS[wildcards.experiment])] + [
        stream_path(p.spec, "rounds.parquet")
        for p in PLAN.experiments[wildcards.experiment]
        if isinstance(p.spec, StreamSpec)
    ]


def report_of(experiment):
    return REPORTS[PLAN.experiment_config[experiment]["report"]]


def report_input(wildcards):
    """The tables the experiment's report reads, by name: those the experiment writes (a leaderboard of
    one protocol has no table of the other)."""
    written = result_tables(wildcards.experiment)
    return {t: written[t] for t in report_of(wildcards.experiment).tables if t in written}


def experiments_where(keep):
    """A wildcard pattern matching the experiments for which ``keep(name)`` holds."""
    return names_pattern([n for n in PLAN.experiments if keep(n)])


# -- targets -------------------------------------------------------------------------------------------


def report_targets(name):
    return [f"{FIGURES}/{name}.{ext}" for ext in (*report_of(name).outputs, "png")]


def report_caption(name):
    exp = PLAN.experiment_config[name]
    return caption(name, exp, REPORTS[exp["report"]], EXPERIMENT_KINDS[exp["kind"]])


def index_entries():
    """The front page's entries, one per experiment: its title, caption and files (beside the page)."""
    entries = []
    for name in PLAN.experiments:
        entry = report_of(name)
        entries.append(
            {
                "experiment": name,
                "title": entry.title(name),
                "caption": first_paragraph(entry.draw.__doc__),
                "files": [Path(t).name for t in report_targets(name)],
            }
        )
    return entries


def all_targets():
    targets = []
    for name in PLAN.experiments:
        targets += list(result_tables(name).values())
        targets += report_targets(name)
    return targets + [f"{FIGURES}/index.html"]
