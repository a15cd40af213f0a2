# Paths of every file the workflow writes, and the input functions of the rules, all derived from the
# plan. Runs live in directories named by their content hash (RunSpec.name), so an edited condition
# gets a new directory and an unchanged one keeps its results.
import json

from pathlib import Path

from warmstart.experiments import run_split_name
from warmstart.multiseed import plan_stacks
from warmstart.reports import REPORTS
from warmstart.runner import RUN_FILES
from warmstart.streams import StreamSpec

RESULTS = config["results_dir"]
FIGURES = config["figures_dir"]
ENV = "../envs/warmstart.yaml"


# Without these, `results/runs/<run>/epochs.parquet` would also match `results/{experiment}/epochs.parquet`
wildcard_constraints:
    experiment="|".join(PLAN.experiments),
    run="[^/]+",
    stream="[^/]+",
    dataset_key="[^/]+",
    split="[^/]+",


def data_path(spec):
    return f"{RESULTS}/data/{spec.dataset.key}.pt"


def split_path(spec):
    return f"{RESULTS}/splits/{run_split_name(spec)}.pt"


def run_path(spec, file):
    return f"{RESULTS}/runs/{spec.name}/{file}"


def stream_path(spec, file):
    return f"{RESULTS}/streams/{spec.name}/{file}"


# The mlp/logreg runs still to do are stacked by condition: one job trains all their seeds at once
# (warmstart.multiseed). Runs already done stay out, so a seed added later does not retrain the others.
STACKS = (
    plan_stacks(
        PLAN.runs.values(),
        is_done=lambda spec: Path(run_path(spec, "model.pt")).exists(),
    )
    if config["stack_seeds"]
    else {}
)
STACKED_RUNS = {spec.name for specs in STACKS.values() for spec in specs}


def planned_spec(name, table="runs"):
    try:
        return getattr(PLAN, table)[name]
    except KeyError:
        raise WorkflowError(
            f"{name!r} is not planned by the current config; its directory name must come "
            "from an experiment in the config"
        )


def is_online(experiment):
    return any(isinstance(p.spec, StreamSpec) for p in PLAN.experiments[experiment])


def result_tables(experiment):
    """The experiment's parquet tables: rounds for online streams, summary and epochs for runs."""
    names = ["rounds"] if is_online(experiment) else ["summary", "epochs"]
    return {n: f"{RESULTS}/{experiment}/{n}.parquet" for n in names}


# -- input functions and params ------------------------------------------------------------------------


def split_inputs(wildcards):
    dataset, _, _ = PLAN.splits[wildcards.split]
    return f"{RESULTS}/data/{dataset.key}.pt"


def run_inputs(wildcards):
    spec = planned_spec(wildcards.run)
    inputs = {"data": data_path(spec), "split": split_path(spec)}
    if spec.parent is not None:
        inputs["parent"] = run_path(spec.parent, "model.pt")
    return inputs


def stack_inputs(specs):
    """Named inputs of a stack job: the data, then per seed its split and (warm runs) its parent."""
    inputs = {"data": data_path(specs[0])}
    for spec in specs:
        inputs[f"split_s{spec.seed}"] = split_path(spec)
        if spec.parent is not None:
            inputs[f"parent_s{spec.seed}"] = run_path(spec.parent, "model.pt")
    return inputs


def single_run_pattern():
    """Run names train_run may make: any but those of a stack, which its stack rule makes."""
    if not STACKED_RUNS:
        return "[^/]+"
    return "(?!(?:" + "|".join(sorted(STACKED_RUNS)) + ")(?:/|$))[^/]+"


def stream_inputs(wildcards):
    spec = planned_spec(wildcards.stream, "streams")
    return {"data": data_path(spec.round), "split": split_path(spec)}


def summary_inputs(wildcards):
    planned = PLAN.experiments[wildcards.experiment]
    return [
        run_path(p.spec, f) for p in planned for f in ("metrics.json", "epochs.parquet")
    ]


def rounds_inputs(wildcards):
    planned = PLAN.experiments[wildcards.experiment]
    return [stream_path(p.spec, "rounds.parquet") for p in planned]


def figure_input(wildcards):
    table, _ = REPORTS[PLAN.experiment_config[wildcards.experiment]["report"]]
    return f"{RESULTS}/{wildcards.experiment}/{table}.parquet"


def planned_json(wildcards):
    planned = PLAN.experiments[wildcards.experiment]
    return json.dumps([{"spec": p.spec.to_dict(), "labels": p.labels} for p in planned])


# -- targets -------------------------------------------------------------------------------------------


def experiments_where(keep):
    """A wildcard pattern matching the experiments for which ``keep(name)`` holds."""
    names = [n for n in PLAN.experiments if keep(n)]
    return "|".join(names) if names else "(?!x)x"  # matches nothing when none does


def report_targets(name):
    report_kind = PLAN.experiment_config[name]["report"]
    if report_kind == "table":
        return [f"{FIGURES}/{name}.{ext}" for ext in ("csv", "md", "pdf")]
    return [f"{FIGURES}/{name}.pdf"]


def all_targets():
    targets = []
    for name in PLAN.experiments:
        targets += list(result_tables(name).values())
        targets += report_targets(name)
    return targets
