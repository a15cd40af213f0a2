# Paths of every file the workflow writes, and the input functions of the rules, all derived from the
# plan. Runs live in directories named by their content hash (RunSpec.name), so an edited condition
# gets a new directory and an unchanged one keeps its results.
import json

from warmstart.experiments import run_split_name

RESULTS = config["results_dir"]
FIGURES = config["figures_dir"]
ENV = "../envs/warmstart.yaml"


# Without these, `results/runs/<run>/epochs.parquet` would also match `results/{experiment}/epochs.parquet`
wildcard_constraints:
    experiment="|".join(PLAN.experiments),
    run="[^/]+",
    dataset_key="[^/]+",
    split="[^/]+",


def data_path(spec):
    return f"{RESULTS}/data/{spec.dataset.key}.pt"


def split_path(spec):
    return f"{RESULTS}/splits/{run_split_name(spec)}.pt"


def run_path(spec, file):
    return f"{RESULTS}/runs/{spec.name}/{file}"


def planned_spec(run):
    try:
        return PLAN.runs[run]
    except KeyError:
        raise WorkflowError(
            f"run {run!r} is not planned by the current config; its directory name must come "
            "from an experiment in the config"
        )


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


def summary_inputs(wildcards):
    planned = PLAN.experiments[wildcards.experiment]
    return [
        run_path(p.spec, f) for p in planned for f in ("metrics.json", "epochs.parquet")
    ]


def planned_json(wildcards):
    planned = PLAN.experiments[wildcards.experiment]
    return json.dumps([{"spec": p.spec.to_dict(), "labels": p.labels} for p in planned])


# -- targets -------------------------------------------------------------------------------------------


def experiments_with_report(report_kind):
    names = [n for n, e in PLAN.experiment_config.items() if e.get("report") == report_kind]
    # a pattern that matches nothing when no experiment uses this report
    return "|".join(names) if names else "(?!x)x"


def report_targets(name):
    report_kind = PLAN.experiment_config[name]["report"]
    if report_kind == "table":
        return [f"{FIGURES}/{name}.{ext}" for ext in ("csv", "md", "pdf")]
    return [f"{FIGURES}/{name}.pdf"]


def all_targets():
    targets = []
    for name in PLAN.experiments:
        targets += [f"{RESULTS}/{name}/summary.parquet", f"{RESULTS}/{name}/epochs.parquet"]
        targets += report_targets(name)
    return targets
