"""Your data, your model: image folders, tensor files and tables read by config alone (with subsets and
class filters), torchvision models by name and the user's own model by import path, each bad input
refused with its key or file named, and the whole study run end to end on tiny generated files."""
from __future__ import annotations

import copy
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from test_workflow import REPO, SCHEMA, load_test_config, planned_training_runs, snakemake, training_jobs
from warmstart.plan.config_check import check_config
from warmstart.components.datasets import DATASETS, load_raw, planned_options, stratified_counts
from warmstart.core.errors import ConfigError, DatasetError
from warmstart.plan.experiments import plan_experiments
from warmstart.components.models import MODELS, build_model
from warmstart.core.spec import ModelSpec
from warmstart.reports.advice import advice, paired_interval, sentences, verdict, write_advice
from warmstart.reports.stats import leaderboard

CLASSES = ("ant", "bee", "cat", "dog")


# -- tiny generated files ----------------------------------------------------------------------------------

def make_images(root: Path, classes=CLASSES, per_class: int = 12, size=(10, 12), mode: str = "RGB",
                seed: int = 0) -> Path:
    """An ImageFolder-layout folder of small PNGs whose brightness depends on the class."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(40 + 50 * k, 30, size=(*size, channels)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(root / name / f"{i:03d}.png")
    return root


def make_table(path: Path, rows: int = 300, seed: int = 0) -> Path:
    """A table of 5 numeric features and a string label whose feature means depend on the class."""
    rng = np.random.default_rng(seed)
    label = rng.choice(["setosa", "versicolor", "virginica"], size=rows)
    k = pd.Series(label).map({"setosa": 0, "versicolor": 1, "virginica": 2}).to_numpy()
    frame = pd.DataFrame({f"f{j}": rng.normal(k * (j % 3 - 1), 1.0) for j in range(5)})
    frame["species"] = label
    frame["id"] = [f"row{i}" for i in range(rows)]  # a non-numeric column, left out by feature_columns
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


def make_tensors(path: Path, n: int = 90, seed: int = 0) -> Path:
    """uint8 images (N, H, W) of 3 classes, and a small test set, as .pt or .npz."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = np.clip(rng.normal(60 + 60 * y[:, None, None], 30, size=(n, 8, 8)), 0, 255).astype(np.uint8)
    arrays = {"x": x, "y": y, "x_test": x[:9], "y_test": y[:9]}
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, path)
    return path


USER_MODULE = '''
import math
from torch import nn


def build(input_shape, num_classes, hidden: int = 16, activation: str = "relu"):
    """The user's own MLP: an nn.Sequential of Flatten, Linear and ReLU/Tanh (so it can stack)."""
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), act(),
                         nn.Linear(hidden, num_classes))
'''


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a fresh directory (relative config paths resolve against the working directory)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- reading the files ---------------------------------------------------------------------------------------

def test_an_image_folder_is_resized_uint8_nchw_with_one_class_per_sub_folder(in_tmp):
    make_images(in_tmp / "pics")
    make_images(in_tmp / "pics_test", per_class=2, seed=1)
    raw = load_raw("image_folder", "unused", path="pics", size=8, test_path="pics_test")
    assert raw.x_train.shape == (48, 3, 8, 8) and raw.x_train.dtype == torch.uint8
    assert raw.x_test.shape == (8, 3, 8, 8) and raw.classes == list(CLASSES) and raw.num_classes == 4
    assert raw.y_train.tolist() == sorted(raw.y_train.tolist()) == [k for k in range(4) for _ in range(12)]
    # the file's pixels, resized as PIL resizes them
    first = np.asarray(Image.open(in_tmp / "pics" / "ant" / "000.png").resize((8, 8), Image.Resampling.BILINEAR))
    assert torch.equal(raw.x_train[0], torch.from_numpy(first.transpose(2, 0, 1).copy()))
    rect = load_raw("image_folder", "unused", path="pics", size=[6, 9], channels=1)
    assert rect.x_train.shape == (48, 1, 6, 9)


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_a_tensor_file_gives_images_labels_and_its_own_test_set(in_tmp, suffix):
    make_tensors(in_tmp / f"data{suffix}")
    raw = load_raw("tensor_file", "unused", path=f"data{suffix}")
    assert raw.x_train.shape == (90, 1, 8, 8) and raw.x_train.dtype == torch.uint8  # (N, H, W) -> one channel
    assert raw.x_test.shape == (9, 1, 8, 8) and raw.classes == ["0", "1", "2"]
    assert raw.y_train.tolist()[:4] == [0, 1, 2, 0]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_table_gives_standardised_float_features_and_named_classes(in_tmp, suffix):
    make_table(in_tmp / f"iris{suffix}")
    raw = load_raw("table", "unused", path=f"iris{suffix}", label_column="species",
                   feature_columns=["f0", "f1", "f2", "f3", "f4"])
    assert raw.x_train.shape == (300, 5) and raw.x_train.dtype == torch.float32
    assert raw.classes == ["setosa", "versicolor", "virginica"] and raw.x_test.shape == (0, 5)
    assert torch.allclose(raw.x_train.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(raw.x_train.std(0, unbiased=False), torch.ones(5), atol=1e-4)
    frame = pd.read_parquet(in_tmp / f"iris{suffix}") if suffix == ".parquet" else pd.read_csv(in_tmp / f"iris{suffix}")
    assert raw.y_train.tolist() == frame["species"].map({c: i for i, c in enumerate(raw.classes)}).tolist()


def test_classes_keep_only_those_renumbered_in_the_datasets_order(in_tmp):
    make_images(in_tmp / "pics")
    raw = load_raw("image_folder", "unused", path="pics", size=8, classes=["dog", "bee"])
    assert raw.classes == ["bee", "dog"] and raw.num_classes == 2
    assert raw.y_train.tolist() == [0] * 12 + [1] * 12
    make_tensors(in_tmp / "d.npz")
    raw = load_raw("tensor_file", "unused", path="d.npz", classes=[2, 0])  # an int names the class str(int)
    assert raw.classes == ["0", "2"] and set(raw.y_train.tolist()) == {0, 1} and len(raw.y_test) == 6
    # built-in datasets take them too
    both = load_raw("mnist1d", in_tmp, num_samples=200, seed=1, classes=["3", "7"])
    raw = load_raw("mnist1d", in_tmp, num_samples=200, seed=1, classes=["3", "7"], subset=20)
    assert raw.classes == ["3", "7"] and raw.input_shape == (40,)
    assert torch.bincount(raw.y_train).tolist() == stratified_counts(torch.bincount(both.y_train).tolist(), 20)


def test_a_subset_is_seeded_and_class_stratified(in_tmp):
    make_table(in_tmp / "iris.parquet")
    full = load_raw("table", "unused", path="iris.parquet", label_column="species", feature_columns=["f0", "f1"])
    counts = torch.bincount(full.y_train).tolist()
    a = load_raw("table", "unused", path="iris.parquet", label_column="species", feature_columns=["f0", "f1"],
                 subset=40)
    b = load_raw("table", "unused", path="iris.parquet", label_column="species", feature_columns=["f0", "f1"],
                 subset=40)
    c = load_raw("table", "unused", path="iris.parquet", label_column="species", feature_columns=["f0", "f1"],
                 subset=40, subset_seed=1)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    got = torch.bincount(a.y_train).tolist()
    assert sum(got) == 40 and got == stratified_counts(counts, 40)
    assert all(abs(g - 40 * n / 300) < 1.5 for g, n in zip(got, counts))  # in proportion, up to rounding
    # the chosen rows are rows of the full table, in the file's order
    rows = [int(np.flatnonzero((full.x_train.numpy() == r).all(1))[0]) for r in a.x_train.numpy()]
    assert rows == sorted(rows) and len(set(rows)) == 40


@pytest.mark.parametrize("counts, n, expected", [
    ([10, 10, 10], 6, [2, 2, 2]),
    ([100, 10, 1], 12, [9, 2, 1]),  # one each, then 9 shared as 99:9:0 (8.25, 0.75, 0), largest remainder
    ([5, 5], 3, [2, 1]),  # a tie goes to the lower label
    ([3, 7], 10, [3, 7]),
])
def test_stratified_counts(counts, n, expected):
    assert stratified_counts(counts, n) == expected


def test_a_subset_larger_than_the_data_or_smaller_than_its_classes_is_refused(in_tmp):
    make_images(in_tmp / "pics", per_class=3)
    with pytest.raises(DatasetError, match="subset 50 is more than its 12 training samples"):
        load_raw("image_folder", "unused", path="pics", size=8, subset=50)
    with pytest.raises(DatasetError, match="subset 3 is fewer than its 4 classes"):
        load_raw("image_folder", "unused", path="pics", size=8, subset=3)


# -- bad inputs: before any job where the files' names and headers tell, else in the prepare job --------------

def user_config(tmp: Path) -> dict:
    """Three datasets read from files in ``tmp`` (relative paths), the user's models, a batch experiment."""
    return load_test_config("user_data")


def make_user_files(tmp: Path) -> None:
    make_images(tmp / "pics")
    make_tensors(tmp / "digits.pt")
    make_table(tmp / "iris.parquet")
    (tmp / "mymodels.py").write_text(USER_MODULE)


def plan(config: dict):
    """What the Snakefile does before any job: the schema (filling in its defaults), then the planner."""
    config = copy.deepcopy(config)
    check_config(config, SCHEMA)  # fills in the schema's defaults too
    return plan_experiments(config)


def test_the_user_config_plans_with_a_fingerprint_per_file_dataset(in_tmp):
    make_user_files(in_tmp)
    planned = plan(user_config(in_tmp))
    keys = {spec.name: spec for spec in planned.datasets.values()}
    assert set(keys) == {"image_folder", "tensor_file", "table"}
    assert all(len(spec.options["fingerprint"]) == 16 for spec in keys.values())


def edit(config: dict, path: tuple, value) -> dict:
    config = copy.deepcopy(config)
    *parents, last = path
    node = config
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return config


DELETE = object()

BAD_PLANS = [  # (what, config edit (path, value), file edit, the error's start, words it must say)
    ("missing folder", (("datasets", "pics", "path"), "no_such_dir"), None,
     "datasets.pics.path", ["no such folder", "no_such_dir"]),
    ("missing file", (("datasets", "tens", "path"), "gone.pt"), None, "datasets.tens.path", ["no such file"]),
    ("missing label column", (("datasets", "tab", "label_column"), "label"), None,
     "datasets.tab.label_column", ["no column 'label'", "iris.parquet", "species"]),
    ("non-numeric feature", (("datasets", "tab", "feature_columns"), DELETE), None,
     "datasets.tab.feature_columns", ["'id'", "not numeric"]),
    ("empty class", None, lambda tmp: (tmp / "pics" / "eel").mkdir(), "datasets.pics.path", ["eel", "has no images"]),
    ("unknown class", (("datasets", "pics", "classes"), ["ant", "cow"]), None, "datasets.pics.classes",
     ["'cow'", "allowed", "ant"]),
    ("no class folders", None, lambda tmp: _flatten(tmp), "datasets.pics.path", ["no class sub-folders", "ImageFolder"]),
    ("bad size", (("datasets", "pics", "size"), 0), None, "datasets.pics.size", []),
    ("bad channels", (("datasets", "pics", "channels"), 2), None, "datasets.pics.channels", []),
    ("bad option", (("datasets", "pics", "colour"), "rgb"), None, "datasets.pics", ["colour", "allowed"]),
    ("subset zero", (("datasets", "tens", "subset"), 0), None, "datasets.tens.subset", []),
    ("classes not a list", (("datasets", "tab", "classes"), "setosa"), None, "datasets.tab.classes", []),
    ("table suffix", (("datasets", "tab", "path"), "mymodels.py"), None, "datasets.tab.path", [".parquet", ".csv"]),
    ("unknown torchvision model", (("models", "tv", "name"), "resnet9000"), None, "models.tv.name",
     ["unknown torchvision model", "resnet50"]),
    ("torchvision option", (("models", "tv", "drop_out"), 0.1), None, "models.tv",
     ["refuses", "drop_out"]),
    ("pretrained weights", (("models", "tv", "weights"), "DEFAULT"), None, "models.tv.weights",
     ["no pretrained weights"]),
    ("factory not importable", (("models", "mine", "factory"), "nomodule:build"), None, "models.mine.factory",
     ["cannot import 'nomodule'"]),
    ("factory missing function", (("models", "mine", "factory"), "mymodels:make"), None, "models.mine.factory",
     ["no function 'make'"]),
    ("factory option unknown", (("models", "mine", "hiden"), 3), None, "models.mine",
     ["unknown option(s) ['hiden']", "activation", "hidden"]),
    ("factory option type", (("models", "mine", "hidden"), "16"), None, "models.mine.hidden", ["must be int"]),
]


def _flatten(tmp: Path) -> None:
    """Move every image of pics/ to its top level (no class sub-folders left)."""
    for cls in CLASSES:
        for f in (tmp / "pics" / cls).iterdir():
            f.rename(tmp / "pics" / f"{cls}_{f.name}")
        (tmp / "pics" / cls).rmdir()


@pytest.mark.parametrize("what, config_edit, file_edit, key, words", BAD_PLANS, ids=[b[0] for b in BAD_PLANS])
def test_a_bad_input_is_refused_when_planning_naming_its_key(in_tmp, what, config_edit, file_edit, key, words):
    make_user_files(in_tmp)
    config = user_config(in_tmp)
    if config_edit:
        config = edit(config, *config_edit)
    if file_edit:
        file_edit(in_tmp)
    with pytest.raises(ConfigError) as info:
        plan(config)
    message = str(info.value)
    assert message.startswith(key), message
    for word in words:
        assert word in message, message


def test_a_bad_input_stops_snakemake_before_any_job(tmp_path):
    make_user_files(tmp_path)
    (tmp_path / "pics" / "eel").mkdir()
    proc = snakemake(tmp_path, user_config(tmp_path), "-n", check=False)
    assert proc.returncode != 0
    assert "config error: datasets.pics.path: class folder" in proc.stderr + proc.stdout
    assert not (tmp_path / "results" / "data").exists()


def test_an_unreadable_image_fails_naming_the_file(in_tmp):
    make_images(in_tmp / "pics", per_class=3)
    (in_tmp / "pics" / "bee" / "001.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=r"cannot read image '.*pics/bee/001\.png'.*replace or remove"):
        load_raw("image_folder", "unused", path="pics", size=8)


def test_mixed_channel_counts_fail_naming_both_files_and_the_option_that_fixes_it(in_tmp):
    make_images(in_tmp / "pics", per_class=3)
    make_images(in_tmp / "gray", classes=("cat",), per_class=1, mode="L")
    (in_tmp / "gray" / "cat" / "000.png").rename(in_tmp / "pics" / "cat" / "zz_gray.png")
    with pytest.raises(DatasetError, match=r"mixed channel counts: '.*cat/zz_gray\.png' has 1 channel.*"
                                           r"'.*ant/000\.png' has 3; set the dataset option 'channels'"):
        load_raw("image_folder", "unused", path="pics", size=8)
    assert load_raw("image_folder", "unused", path="pics", size=8, channels=3).x_train.shape == (13, 3, 8, 8)


def test_images_of_different_sizes_need_the_size_option(in_tmp):
    make_images(in_tmp / "pics", per_class=2)
    make_images(in_tmp / "pics", classes=("dog",), per_class=1, size=(5, 5), seed=3)
    with pytest.raises(DatasetError, match="mixed image sizes.*set the dataset option 'size'"):
        load_raw("image_folder", "unused", path="pics")


def test_a_prepare_job_with_an_unreadable_image_fails_with_the_file_named_in_its_log(tmp_path):
    make_user_files(tmp_path)
    (tmp_path / "pics" / "cat" / "003.png").write_bytes(b"\x89PNG broken")
    config = user_config(tmp_path)
    config["experiments"] = {"table1": {**config["experiments"]["table1"], "datasets": ["pics"]}}
    proc = snakemake(tmp_path, config, check=False)
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in (tmp_path / "results" / "logs" / "data").glob("*.log"))
    assert re.search(r"error: cannot read image '.*pics/cat/003\.png'", logs), logs
    assert not list((tmp_path / "results").glob("runs/*/model.pt"))


def test_the_table_label_column_and_the_tensor_file_keys_are_read_from_the_headers(in_tmp):
    np.savez(in_tmp / "bad.npz", inputs=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(Exception, match=r"lacks the array\(s\) \['x'\]"):
        DATASETS.check("tensor_file", {"path": "bad.npz"}, "datasets.t")
    make_table(in_tmp / "iris.csv")
    with pytest.raises(Exception, match="datasets.t.label_column: no column 'kind'"):
        DATASETS.check("table", {"path": "iris.csv", "label_column": "kind"}, "datasets.t")


# -- editing the data on disk -----------------------------------------------------------------------------------

def test_editing_one_file_renames_only_that_datasets_prepared_file_and_the_loader_refuses_stale_plans(in_tmp):
    make_user_files(in_tmp)
    config = user_config(in_tmp)
    before = {s.name: s.key for s in plan(config).datasets.values()}
    assert plan(config).datasets.keys() == set(before.values())  # planning again changes nothing
    image = in_tmp / "pics" / "bee" / "004.png"
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(image)
    os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))  # a later mtime, whatever the clock's grain
    after = {s.name: s.key for s in plan(config).datasets.values()}
    assert after["image_folder"] != before["image_folder"]
    assert after["tensor_file"] == before["tensor_file"] and after["table"] == before["table"]
    stale = planned_options("image_folder", {"path": "pics", "size": 8}, "datasets.pics")
    (in_tmp / "pics" / "ant" / "new.png").write_bytes(image.read_bytes())  # a file added after planning
    with pytest.raises(DatasetError, match="the files changed after the workflow planned this job"):
        load_raw("image_folder", "unused", **stale)
    with pytest.raises(ConfigError, match="datasets.pics.fingerprint: is computed"):
        plan(edit(config, ("datasets", "pics", "fingerprint"), "abc"))


# -- models the user already has ------------------------------------------------------------------------------

def test_a_torchvision_model_gets_its_head_sized_to_the_classes_and_its_stem_to_the_channels():
    model = build_model(ModelSpec("torchvision", {"name": "resnet18"}), (1, 8, 8), 3)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 3
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    model = build_model(ModelSpec("torchvision", {"name": "mobilenet_v3_small"}), (4, 16, 16), 5)
    assert model.features[0][0].in_channels == 4 and model(torch.zeros(2, 4, 16, 16)).shape == (2, 5)
    assert not MODELS["torchvision"].stackable


def test_a_user_model_is_built_by_its_factory_with_its_options(in_tmp):
    (in_tmp / "mymodels.py").write_text(USER_MODULE)
    model = build_model(ModelSpec("python", {"factory": "mymodels:build", "hidden": 7, "activation": "tanh"}), (2, 3), 4)
    assert isinstance(model[2], torch.nn.Tanh) and model[1].out_features == 7 and model[3].out_features == 4
    by_file = build_model(ModelSpec("python", {"factory": "mymodels.py:build"}), (6,), 2)
    assert by_file[1].in_features == 6


def test_only_a_user_model_said_to_stack_trains_on_the_stacked_engine(in_tmp):
    make_user_files(in_tmp)
    planned = plan(user_config(in_tmp))
    from warmstart.plan.job_blocks import stackable
    arch = {spec.model.options.get("factory") and spec.model.options.get("hidden"): stackable(spec)
            for spec in planned.runs.values() if spec.model.arch == "python"}
    assert arch == {16: True, 12: False}
    assert not any(stackable(s) for s in planned.runs.values() if s.model.arch == "torchvision")


# -- end to end -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_user_study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("user_study")
    make_user_files(workdir)
    config = user_config(workdir)
    out = snakemake(workdir, config, "-n").stdout
    snakemake(workdir, config)
    return workdir, config, out


def test_file_datasets_and_user_models_run_the_batch_experiment_and_a_leaderboard(finished_user_study):
    workdir, config, _ = finished_user_study
    results, figures = workdir / "results", workdir / "figures"
    table1 = pd.read_parquet(results / "table1" / "summary.parquet")
    assert len(table1) == 3 * 2 * 3  # datasets x seeds x (phase 1, random, warm)
    assert set(table1["dataset"]) == {"pics", "tens", "tab"} and table1["val_acc"].between(0, 1).all()
    n_train = table1[table1["phase"] == 2].groupby("dataset")["n_train"].first().to_dict()
    n_val = table1[table1["phase"] == 2].groupby("dataset")["n_val"].first().to_dict()
    assert n_train["pics"] + n_val["pics"] == 30 and n_train["tens"] + n_val["tens"] == 60  # the subsets
    assert n_train["tab"] + n_val["tab"] == int((pd.read_parquet(workdir / "iris.parquet")["species"]
                                                 != "versicolor").sum())  # the class filter
    # the torchvision model and the user's model that does not stack: random, warm and shrink-perturbed
    single = pd.read_parquet(results / "single" / "summary.parquet")
    assert set(single["model"]) == {"tv", "mine_alone"} and set(single["init"]) == {"random", "warm", "sp"}
    assert len(single) == 2 * 4 and single["val_acc"].between(0, 1).all()
    lb = pd.read_csv(figures / "lb.csv")
    assert set(lb["dataset"]) == {"pics", "tens", "tab"} and "sp" in set(lb["remedy"])
    assert (figures / "lb.png").exists() and (figures / "table1.md").exists()
    # the batch experiment's runs are the leaderboard's (shared, trained once)
    assert set(table1["run_id"]) <= set(pd.read_parquet(results / "lb" / "summary.parquet")["run_id"])


def test_the_job_server_imports_torchvision_once_for_the_torchvision_models_jobs(finished_user_study, monkeypatch):
    workdir, config, _ = finished_user_study
    monkeypatch.chdir(workdir)  # the config's paths are relative to it
    assert plan(config).model_libraries == ("torchvision.models",)
    assert plan(load_test_config("tiny")).model_libraries == ()  # nothing beyond job_forks.PRELOAD
    server_log = (workdir / "results" / "logs" / "job_server.log").read_text()
    assert re.search(r"imported .*torchvision\.models", server_log), server_log


def test_the_user_models_train_stacked_where_stackable_and_alone_otherwise(finished_user_study):
    _, _, out = finished_user_study
    jobs = training_jobs(out)
    stacks = {j for j in jobs if j.startswith("train_stack:")}
    singles = {j for j in jobs if j.startswith("train_run:")}
    assert stacks and all("_python_" in j for j in stacks)
    assert any("_torchvision_" in j for j in singles) and any("_python_" in j for j in singles)
    assert not any("_torchvision_" in j for j in stacks)


def test_editing_one_image_re_prepares_only_that_dataset_and_retrains_only_its_runs(finished_user_study):
    workdir, config, _ = finished_user_study

    def work(out: str) -> set[str]:
        return training_jobs(out) | set(re.findall(r"^rule (prepare_dataset|make_split):", out, re.M))

    assert not work(snakemake(workdir, config, "-n").stdout)
    image = workdir / "pics" / "ant" / "000.png"
    original, stat = image.read_bytes(), image.stat()
    try:
        Image.fromarray(np.full((10, 12, 3), 255, np.uint8)).save(image)
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        out = snakemake(workdir, config, "-n").stdout
        prepared = re.findall(r"^rule prepare_dataset:\n(?:    .*\n)*?    wildcards: dataset_key=(\S+)", out, re.M)
        assert len(prepared) == 1 and prepared[0].startswith("image_folder-")
        retrained = planned_training_runs(workdir, config, out)
        assert retrained and all(r.startswith("image_folder_") for r in retrained)
    finally:
        image.write_bytes(original)
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not work(snakemake(workdir, config, "-n").stdout)  # the original file: its old name again


def test_the_advice_page_equals_the_leaderboard_and_trains_nothing_of_its_own(finished_user_study):
    workdir, config, out = finished_user_study
    figures = workdir / "figures"
    page = pd.read_csv(figures / "advice.csv")
    board = pd.read_csv(figures / "lb.csv")
    assert len(page) == 3 and (figures / "advice.png").exists()
    for row in page.itertuples(index=False):
        arms = board[(board["dataset"] == row.dataset) & (board["model"] == row.model)].set_index("remedy")
        split = row.report_split  # test where the data set has a test split, else validation (and it says so)
        assert set(board["report_split"]) == {split}
        assert row.random_acc == pytest.approx(arms.loc["random", f"{split}_acc_mean"], abs=1e-4)
        assert row.warm_acc == pytest.approx(arms.loc["warm", f"{split}_acc_mean"], abs=1e-4)
        assert row.warm_samples_rel == pytest.approx(arms.loc["warm", "samples_rel"], abs=1e-4)
        assert row.best_vs_warm_mean == pytest.approx(arms.loc["sp", f"{split}_vs_warm_mean"], abs=1e-4)
        if row.gap_exists:
            assert row.best_gap_closed == pytest.approx(arms.loc["sp", "gap_closed"], abs=1e-4)
        else:  # no gap to close: no gap closed, no full recovery
            assert row.best_gap_closed != row.best_gap_closed and row.cheapest_recovering != row.cheapest_recovering
    text = (figures / "advice.md").read_text()
    assert text.count("**Recommendation: ") == 3 and "| dataset / model / optimiser |" in text
    advice_runs = set(pd.read_parquet(workdir / "results" / "advice" / "summary.parquet")["run_id"])
    assert advice_runs == set(pd.read_parquet(workdir / "results" / "lb" / "summary.parquet")["run_id"])


# -- the advice's judgement, on hand-made rows ------------------------------------------------------------------

def remedy_rows(accs: dict, samples: dict, test: dict | None = None) -> pd.DataFrame:
    """A remedies experiment's summary: {(role, remedy, setting): [val_acc per seed]}, samples per setting;
    test accuracy per seed from ``test`` (same keys), else the validation accuracy."""
    rows = []
    for (role, remedy, setting), values in accs.items():
        tests = (test or {}).get((role, remedy, setting), values)
        for seed, (acc, tst) in enumerate(zip(values, tests)):
            rows.append(dict(dataset="d", model="m", optimizer="o", phase=2, seed=seed, role=role, remedy=remedy,
                             setting=setting, init=setting, baseline=role == "target", val_acc=acc, test_acc=tst,
                             train_time_s=samples[setting] / 10, init_time_s=0.0, samples_seen=samples[setting],
                             init_samples=0, converged=True))
    return pd.DataFrame(rows)


SAMPLES = {"random": 1000, "warm": 400, "sp shrink=0.3 perturb=0.01": 900, "sp shrink=0.6 perturb=0.01": 700,
           "l2i coef=0.01": 1200}


def test_a_clear_cost_recommends_the_cheapest_remedy_that_matches_random_init():
    summary = remedy_rows({("target", "random", "random"): [0.80, 0.81, 0.79, 0.80],
                           ("baseline", "warm", "warm"): [0.75, 0.76, 0.74, 0.75],
                           ("remedy", "sp", "sp shrink=0.3 perturb=0.01"): [0.81, 0.80, 0.80, 0.81],
                           ("remedy", "sp", "sp shrink=0.6 perturb=0.01"): [0.77, 0.78, 0.76, 0.77],
                           ("remedy", "l2i", "l2i coef=0.01"): [0.82, 0.83, 0.81, 0.82]}, SAMPLES)
    page, arms = advice(summary)
    row = page.iloc[0]
    settings, best = leaderboard(summary)
    assert row["warm_cost_mean"] == pytest.approx(0.05) and row["warm_vs_random"] == "worse"
    assert row["warm_samples_rel"] == pytest.approx(0.4) == best.set_index("remedy").loc["warm", "samples_rel"]
    # the most: l2i (gap closed 1.4, 1.2x compute); the cheapest that matches random init: sp at 0.3 (0.9x)
    assert row["best_remedy"] == "l2i" and row["best_gap_closed"] == pytest.approx(1.4)
    assert row["cheapest_recovering"] == "sp shrink=0.3 perturb=0.01" and row["cheapest_samples_rel"] == pytest.approx(0.9)
    assert row["recommendation"] == "warm-start with sp (shrink=0.3, perturb=0.01): +5.5 points, 0.90x compute"
    # the interval: the paired differences warm - random are -0.05, -0.05, -0.05, -0.05
    assert row["warm_cost_low"] == pytest.approx(0.05) == row["warm_cost_high"]


def test_a_wide_spread_says_not_enough_evidence():
    summary = remedy_rows({("target", "random", "random"): [0.80, 0.70, 0.85],
                           ("baseline", "warm", "warm"): [0.72, 0.78, 0.80],
                           ("remedy", "sp", "sp shrink=0.3 perturb=0.01"): [0.79, 0.75, 0.84]}, SAMPLES)
    page, _ = advice(summary)
    row = page.iloc[0]
    assert row["warm_vs_random"] == "unclear" and row["warm_cost_low"] < 0 < row["warm_cost_high"]
    assert row["recommendation"].startswith("not enough evidence: run more seeds")
    one_seed = advice(remedy_rows({("target", "random", "random"): [0.8], ("baseline", "warm", "warm"): [0.6],
                                   ("remedy", "sp", "sp shrink=0.3 perturb=0.01"): [0.8]}, SAMPLES))[0].iloc[0]
    assert one_seed["recommendation"].startswith("not enough evidence") and one_seed["seeds"] == 1


def test_no_measurable_cost_recommends_the_plain_warm_start_and_no_recovery_says_random_init():
    same = remedy_rows({("target", "random", "random"): [0.800, 0.802, 0.801],
                        ("baseline", "warm", "warm"): [0.801, 0.801, 0.800],
                        ("remedy", "sp", "sp shrink=0.3 perturb=0.01"): [0.79, 0.79, 0.79]}, SAMPLES)
    assert advice(same)[0].iloc[0]["recommendation"] == "warm-start: -0.0 points against random init, 0.40x compute"
    none = remedy_rows({("target", "random", "random"): [0.80, 0.81, 0.80],
                        ("baseline", "warm", "warm"): [0.70, 0.71, 0.70],
                        ("remedy", "sp", "sp shrink=0.3 perturb=0.01"): [0.75, 0.76, 0.75]}, SAMPLES)
    row = advice(none)[0].iloc[0]
    assert row["cheapest_recovering"] is None or row["cheapest_recovering"] != row["cheapest_recovering"]
    assert row["recommendation"].startswith("train from random init: a warm start costs +10.0 points")


def test_the_paired_interval_is_students_t():
    ci = paired_interval([0.01, 0.03, 0.02])
    # mean 0.02, std 0.01, t(0.975, 2) = 4.303: half-width 0.01 * 4.303 / sqrt(3) = 0.02484
    assert ci["mean"] == pytest.approx(0.02) and ci["std"] == pytest.approx(0.01)
    assert ci["high"] - ci["mean"] == pytest.approx(0.024841, abs=1e-5)
    assert verdict(ci) == "unclear" and verdict(paired_interval([0.02, 0.021, 0.022])) == "better"
    assert verdict(paired_interval([0.001, -0.001, 0.0])) == "same"


def test_without_a_gap_the_advice_gives_no_gap_closed_and_no_full_recovery(tmp_path):
    """warm = random on every seed (the held-out table's case): a remedy beating both is no 'cheapest full
    recovery' and gets no gap closed, on the page, in its table and in its numbers."""
    summary = remedy_rows({("target", "random", "random"): [0.80, 0.82, 0.81],
                           ("baseline", "warm", "warm"): [0.80, 0.82, 0.81],
                           ("remedy", "sp", "sp shrink=0.3 perturb=0.01"): [0.81, 0.83, 0.82]}, SAMPLES)
    row = advice(summary)[0].iloc[0]
    assert not row["gap_exists"] and row["best_gap_closed"] != row["best_gap_closed"]
    assert row["cheapest_recovering"] is None or row["cheapest_recovering"] != row["cheapest_recovering"]
    assert row["recommendation"].startswith("warm-start: ")
    write_advice(summary, tmp_path / "a.csv", tmp_path / "a.md", tmp_path / "a.pdf", title="advice")
    text = (tmp_path / "a.md").read_text()
    assert not re.search(r"gap closed -?\d", text)  # no value, anywhere on the page
    assert "No gap to close" in text and "| no gap to close |" in text
    assert "The cheapest that recovers" not in text and "sp (shrink=0.3, perturb=0.01) at" not in text


def test_the_advice_chooses_each_setting_on_validation_reports_test_and_says_when_evidence_is_short():
    accs = {("target", "random", "random"): [0.80, 0.81, 0.79, 0.80],
            ("baseline", "warm", "warm"): [0.75, 0.76, 0.74, 0.75],
            ("remedy", "sp", "sp shrink=0.3 perturb=0.01"): [0.81, 0.80, 0.80, 0.81],
            ("remedy", "sp", "sp shrink=0.6 perturb=0.01"): [0.77, 0.78, 0.76, 0.77],
            ("remedy", "l2i", "l2i coef=0.01"): [0.76, 0.77, 0.75, 0.76]}
    # on the test split the shrink 0.6 setting would win; validation chose 0.3, which is what is reported
    test = {**accs, ("remedy", "sp", "sp shrink=0.3 perturb=0.01"): [0.78, 0.80, 0.79, 0.79],
            ("remedy", "sp", "sp shrink=0.6 perturb=0.01"): [0.82, 0.82, 0.82, 0.82],
            ("remedy", "l2i", "l2i coef=0.01"): [0.74, 0.78, 0.73, 0.79]}
    page, arms = advice(remedy_rows(accs, SAMPLES, test))
    row = page.iloc[0]
    assert row["report_split"] == "test" and row["best_setting"] == "sp shrink=0.3 perturb=0.01"
    assert row["best_vs_warm_mean"] == pytest.approx(0.04)  # test: 0.79 - 0.75, not validation's 0.055
    assert row["best_gap_closed"] == pytest.approx(0.04 / 0.05) and row["cheapest_recovering"] is None
    l2i = arms.set_index("remedy").loc["l2i"]  # test - warm: -0.01, +0.02, -0.01, +0.04: interval includes 0
    assert l2i["vs_warm"] == "unclear" and l2i["vs_warm_low"] < 0 < l2i["vs_warm_high"]
    page, _ = advice(remedy_rows({k: v for k, v in accs.items() if k[1] != "sp"}, SAMPLES,
                                 {k: v for k, v in test.items() if k[1] != "sp"}))
    assert "not enough evidence" in " ".join(sentences(page.iloc[0]))


def test_an_intervention_that_never_acted_is_no_remedy_in_the_advice():
    summary = remedy_rows({("target", "random", "random"): [0.80, 0.81, 0.79, 0.80],
                           ("baseline", "warm", "warm"): [0.75, 0.76, 0.74, 0.75],
                           ("remedy", "redo", "redo"): [0.82, 0.83, 0.81, 0.82]}, {**SAMPLES, "redo": 400})
    summary["interventions"] = ["redo" if r == "redo" else "" for r in summary["remedy"]]
    summary["units_reset"] = 0
    page, arms = advice(summary)
    row = page.iloc[0]
    assert row["best_remedy"] is None and row["cheapest_recovering"] is None and row["not_exercised"] == "redo"
    assert arms.set_index("remedy").loc["redo", "status"] == "not exercised"
    assert "Not exercised (their interventions reset no unit in any run, so they never acted): redo." in sentences(row)


def test_the_advice_page_writes_its_sentences_table_and_chart(tmp_path):
    summary = remedy_rows({("target", "random", "random"): [0.80, 0.70, 0.85],
                           ("baseline", "warm", "warm"): [0.72, 0.78, 0.80],
                           ("remedy", "sp", "sp shrink=0.3 perturb=0.01"): [0.79, 0.75, 0.84]}, SAMPLES)
    write_advice(summary, tmp_path / "a.csv", tmp_path / "a.md", tmp_path / "a.pdf", title="advice: yours")
    text = (tmp_path / "a.md").read_text()
    assert "**Recommendation: not enough evidence: run more seeds" in text
    assert "not distinguishable from zero at 3 seed(s)" in text and "| dataset / model / optimiser |" in text
    assert (tmp_path / "a.png").exists() and (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("name, options, make", [
    ("table", {"path": "t.parquet", "label_column": "species", "feature_columns": ["f0"]},
     lambda tmp: make_table(tmp / "t.parquet")),
    ("image_folder", {"path": "pics", "size": 8}, lambda tmp: make_images(tmp / "pics", per_class=2)),
])
def test_a_dataset_without_a_test_set_prepares(in_tmp, name, options, make):
    from warmstart.components.datasets import prepare_dataset
    from warmstart.core.spec import DatasetSpec

    make(in_tmp)
    prepare_dataset(DatasetSpec(name, options), "unused", False, in_tmp / "prepared.pt")  # checksums every tensor
    assert (in_tmp / "prepared.pt").exists()
