"""Every option in a config is checked before any job starts: a misspelt or mistyped dataset, model,
optimiser, init, loss-term or probe option, an unknown selection policy, a stray experiment, grid, stop
or engine setting is refused by the dry run in one line naming its key, the bad option and (for a
registry's entry) the allowed ones; never by a training job's log. One mechanism checks every registry:
``Registry.check``, against the keyword parameters of the registered function (names, and types where
annotated); the experiments' own settings are checked by the JSON schema of their kind."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from test_workflow import load_test_config, snakemake
from warmstart.plan.config_check import check_config
from warmstart.core.errors import ConfigError, SpecError
from warmstart.plan.experiments import plan_experiments
from warmstart.core.registry import check_options

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def small_config() -> dict:
    """Every section that names a registry entry, each with options, in two tiny experiments."""
    return load_test_config("options")


def setting(*path):
    """An edit that sets the config value at ``path`` (its last element) to ``value``."""
    def edit(value):
        def apply(config):
            node = config
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = value
        return apply
    return edit


# (what is wrong, the edit, the key the error must start with, the bad option or value it must name, an allowed
# name it must list (None: the schema's message, which lists none))
TYPOS = [
    ("a misspelt dataset option", setting("datasets", "tiny", "num_samplez")(100),
     "datasets.tiny", "'num_samplez'", "'num_samples'"),
    ("a dataset option of the wrong type", setting("datasets", "tiny", "seed")("3"), "datasets.tiny.seed", "'3'", None),
    ("an unknown dataset", setting("datasets", "tiny", "name")("mnist2d"), "datasets.tiny.name", "'mnist2d'",
     "'mnist1d'"),
    ("a misspelt model option", setting("models", "mlp", "hiden")(100), "models.mlp", "'hiden'", "'hidden'"),
    ("a model option of the wrong type", setting("models", "mlp", "hidden")("8"), "models.mlp.hidden", "'8'", None),
    ("a boolean for a model's integer", setting("models", "mlp", "depth")(True), "models.mlp.depth", "True", None),
    ("a model option outside its choices", setting("models", "mlp", "activation")("gelu"),
     "models.mlp.activation", "'gelu'", "'tanh'"),
    ("a misspelt optimiser field", setting("optimizers", "adam", "lrr")(0.1), "optimizers.adam", "'lrr'", None),
    ("momentum for an optimiser without it", setting("optimizers", "adam", "momentum")(0.9),
     "optimizers.adam.momentum", "takes no momentum", None),
    ("a misspelt init option", setting("inits", "sp", "shrinkk")(0.3), "inits.sp", "'shrinkk'", "'shrink'"),
    ("an init option of the wrong type", setting("inits", "sp", "perturb")([0.1]), "inits.sp.perturb", "[0.1]", None),
    ("an init option outside its choices", setting("inits", "warm", "optimizer_state")("kept"),
     "inits.warm.optimizer_state", "'kept'", "'keep'"),
    ("a misspelt term option", setting("terms", "l2", "coeff")(0.1), "terms.l2", "'coeff'", "'coef'"),
    ("a term option of the wrong type", setting("terms", "l2", "coef")("0.1"), "terms.l2.coef", "'0.1'", None),
    # an entry that only a grid uses is checked with each setting of the grid, named by the grid
    ("a term option outside its choices", setting("terms", "l2i", "anchor")("end"),
     "experiments.table1.term_grid.l2i.anchor", "'end'", "'origin'"),
    ("a misspelt probe option", setting("probes", "grads", "subset")(["old"]), "probes.grads", "'subset'",
     "'subsets'"),
    ("a probe option of the wrong type", setting("probes", "grads", "max_samples")(10.5),
     "probes.grads.max_samples", "10.5", None),
    ("a probe subset outside its choices", setting("probes", "grads", "subsets")(["train", "odl"]),
     "probes.grads.subsets", "'odl'", "'old'"),
    ("an unknown selection policy", setting("experiments", "fig2", "policies")(["randm"]),
     "experiments.fig2.policies[0]", "'randm'", "'random'"),
    ("a misspelt experiment setting", setting("experiments", "table1", "phase1_fractoin")(0.5),
     "experiments.table1", "'phase1_fractoin'", None),
    ("a misspelt option in a term grid", setting("experiments", "table1", "term_grid")({"l2i": {"cof": [0.1]}}),
     "experiments.table1.term_grid.l2i", "'cof'", "'coef'"),
    ("a mistyped value in an init grid", setting("experiments", "table1", "init_grid")({"sp": {"shrink": ["0.2"]}}),
     "experiments.table1.init_grid.sp.shrink", "'0.2'", None),
    ("a misspelt stop setting", setting("experiments", "table1", "stop")({"max_epoch": 3}),
     "experiments.table1.stop", "'max_epoch'", None),
    ("a misspelt engine setting", setting("engine", "precison")("bf16"), "engine", "'precison'", None),
]
IDS = [t[0].replace(" ", "-") for t in TYPOS]


def broken(edit) -> dict:
    config = small_config()
    edit(config)
    return config


def check_and_plan(config: dict):
    """What the Snakefile does before any job: the schema (filling in its defaults), then the planner."""
    check_config(config, SCHEMA)  # fills in the schema's defaults too
    return plan_experiments(config)


def test_the_small_config_with_options_of_the_right_types_plans():
    plan = check_and_plan(small_config())
    sp = [s for s in plan.runs.values() if s.init.strategy == "shrink_perturb"]
    assert {s.init.options["shrink"] for s in sp} == {0.2, 0.4, 1}


@pytest.mark.parametrize("config_file", ["config.yaml", "config/demo.yaml"])
def test_the_shipped_configs_plan(config_file):
    check_and_plan(yaml.safe_load((REPO / config_file).read_text()))


@pytest.mark.parametrize("what, edit, key, bad, allowed", TYPOS, ids=IDS)
def test_a_bad_option_is_refused_by_the_planner_naming_its_key_and_the_option(what, edit, key, bad, allowed):
    with pytest.raises(ConfigError) as info:
        check_and_plan(broken(edit))
    message = str(info.value)
    assert message.startswith(f"{key}:") and bad in message, message
    assert "\n" not in message
    if allowed is not None:
        assert allowed in message, message


# Each takes one dry run (a few seconds): one row of the table per registry and per kind of setting.
DRY_RUN = ["a-misspelt-dataset-option", "a-dataset-option-of-the-wrong-type", "a-misspelt-model-option",
           "a-misspelt-optimiser-field", "a-misspelt-init-option", "a-misspelt-term-option",
           "a-misspelt-probe-option", "an-unknown-selection-policy", "a-misspelt-experiment-setting",
           "a-misspelt-option-in-a-term-grid", "a-misspelt-stop-setting", "a-misspelt-engine-setting"]


@pytest.mark.parametrize("what, edit, key, bad, allowed", [t for t, i in zip(TYPOS, IDS) if i in DRY_RUN],
                         ids=[i for i in IDS if i in DRY_RUN])
def test_a_bad_option_is_refused_by_the_dry_run_before_any_job_starts(tmp_path, what, edit, key, bad, allowed):
    proc = snakemake(tmp_path, broken(edit), "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    lines = [line for line in out.splitlines() if line.startswith("config error: ")]
    assert len(lines) == 1, out
    assert lines[0].startswith(f"config error: {key}:") and bad in lines[0], lines[0]
    if allowed is not None:
        assert allowed in lines[0], lines[0]
    assert "Traceback" not in out and "Job stats" not in out and not (tmp_path / "results").exists(), out


def test_the_dry_run_of_the_small_config_plans_its_jobs(tmp_path):
    out = snakemake(tmp_path, small_config(), "-n").stdout
    assert "rule train_stream:" in out and ("rule train_run:" in out or "rule train_stack:" in out), out


# -- the checker itself ----------------------------------------------------------------------------------

def fn(ctx, count: int = 1, rate: float = 0.1, name: str = "a", flag: bool = False, cap: int | None = None,
       names: list[str] = ("a",), pair: tuple[int, str] = (1, "a"), sizes: tuple[int, ...] = (),
       tensor: torch.Tensor | None = None,  # noqa: F821 (an annotation is read, never evaluated)
       anything=None):
    """Options of every annotation the checker reads, and two it does not (left unchecked)."""


@pytest.mark.parametrize("options", [
    {"count": 3}, {"rate": 1}, {"rate": 0.5}, {"name": "b"}, {"flag": True}, {"cap": None}, {"cap": 4},
    {"names": ["a", "b"]}, {"names": []}, {"pair": [2, "b"]}, {"sizes": [1, 2, 3]}, {"tensor": "anything"},
    {"anything": [object()]},
])
def test_options_of_the_annotated_types_pass(options):
    check_options(fn, options, "key")


@pytest.mark.parametrize("option, value, expected", [
    ("count", 1.5, "int"), ("count", True, "int"), ("count", "3", "int"), ("rate", "1e-3", "float"),
    ("rate", False, "float"), ("name", 1, "str"), ("flag", 1, "bool"), ("cap", 2.0, "int | None"),
    ("names", "a", r"list\[str\]"), ("names", ["a", 1], r"list\[str\]"), ("pair", [1], r"tuple\[int, str\]"),
    ("pair", [1, 2], r"tuple\[int, str\]"), ("sizes", [1, "2"], r"tuple\[int, \.\.\.\]"),
])
def test_an_option_of_the_wrong_type_is_refused_naming_the_option_and_the_type(option, value, expected):
    with pytest.raises(SpecError, match=rf"^key\.{option}: must be {expected}, got "):
        check_options(fn, {option: value}, "key")


def test_a_number_yaml_read_as_a_string_says_how_to_write_it():
    with pytest.raises(SpecError, match=r"^key\.rate: .*'1e-3'.*write it as 1\.0e-3"):
        check_options(fn, {"rate": "1e-3"}, "key")


def test_mnist1d_takes_exactly_the_generators_options_but_its_url():
    from mnist1d.data import get_dataset_args

    from warmstart.components.datasets import DATASETS

    options = list(inspect.signature(DATASETS["mnist1d"]).parameters)[2:]
    assert sorted(options) == sorted(set(get_dataset_args(as_dict=True)) - {"url"})
