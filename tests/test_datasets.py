"""Dataset loaders read tiny files in the official on-disk formats through the real torchvision classes.

torchvision checks each file's md5 against a class attribute; the tests point those attributes at the md5
of the tiny files, so the real integrity check still runs (and a changed byte still fails it).
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from warmstart.components.datasets import DATASETS, DatasetError, load_prepared, load_raw, prepare_dataset
from warmstart.core.io import load_torch
from warmstart.core.spec import DatasetSpec


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def pixels(rng, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def write_pickle(path, obj) -> None:
    # The official files are Python 2 pickles that torchvision reads with encoding="latin1", which
    # gives str keys; protocol 2 with str keys is what that decoding yields.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.fixture
def cifar10(tmp_path, monkeypatch):
    """Five 2-image training batches and a 3-image test batch; returns (root, train rows, labels, test rows)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    train = [pixels(rng, 2) for _ in range(5)]
    labels = [[i % 10, (i + 3) % 10] for i in range(5)]
    for i, (rows, ys) in enumerate(zip(train, labels), 1):
        write_pickle(folder / f"data_batch_{i}", {"batch_label": f"batch {i}", "data": rows, "labels": ys})
    test = pixels(rng, 3)
    write_pickle(folder / "test_batch", {"batch_label": "test", "data": test, "labels": [9, 0, 4]})
    write_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072})
    monkeypatch.setattr(tvd.CIFAR10, "train_list",
                        [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                              "md5": md5(folder / "batches.meta")})
    return tmp_path, np.concatenate(train), sum(labels, []), test


def test_cifar10_reads_official_layout_as_nchw(cifar10):
    root, train_rows, train_labels, test_rows = cifar10
    raw = load_raw("cifar10", root)
    assert raw.x_train.shape == (10, 3, 32, 32) and raw.x_test.shape == (3, 3, 32, 32)
    assert raw.x_train.dtype == torch.uint8 and raw.y_train.dtype == torch.int64
    assert raw.input_shape == (3, 32, 32) and raw.num_classes == 10 and raw.classes[3] == "c3"
    # A row is the R plane, then G, then B, each row-major: pixel (c, h, w) sits at c*1024 + h*32 + w.
    assert raw.x_train[4, 2, 5, 7].item() == train_rows[4, 2 * 1024 + 5 * 32 + 7]
    assert raw.x_test[1, 1, 31, 0].item() == test_rows[1, 1024 + 31 * 32]
    assert torch.equal(raw.x_train, torch.from_numpy(train_rows.reshape(10, 3, 32, 32)))
    assert raw.y_train.tolist() == train_labels and raw.y_test.tolist() == [9, 0, 4]


def test_cifar100_reads_fine_labels(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    train, test = pixels(rng, 4), pixels(rng, 2)
    write_pickle(folder / "train", {"data": train, "fine_labels": [99, 0, 50, 7], "coarse_labels": [19, 0, 1, 2]})
    write_pickle(folder / "test", {"data": test, "fine_labels": [3, 98], "coarse_labels": [0, 1]})
    write_pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                                   "coarse_label_names": [f"k{i}" for i in range(20)]})
    monkeypatch.setattr(tvd.CIFAR100, "train_list", [["train", md5(folder / "train")]])
    monkeypatch.setattr(tvd.CIFAR100, "test_list", [["test", md5(folder / "test")]])
    monkeypatch.setattr(tvd.CIFAR100, "meta", {"filename": "meta", "key": "fine_label_names",
                                               "md5": md5(folder / "meta")})
    raw = load_raw("cifar100", tmp_path)
    assert raw.num_classes == 100 and raw.classes[99] == "f99"
    assert raw.x_train.shape == (4, 3, 32, 32) and raw.x_test.shape == (2, 3, 32, 32)
    assert raw.x_train[3, 0, 10, 20].item() == train[3, 10 * 32 + 20]
    assert raw.y_train.tolist() == [99, 0, 50, 7] and raw.y_test.tolist() == [3, 98]


@pytest.fixture
def svhn(tmp_path, monkeypatch):
    """Tiny .mat files: X is (32, 32, 3, N) = (H, W, C, N), y is (N, 1) with 10 meaning the digit 0."""
    sio = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(2)
    arrays = {}
    for split, n, y in (("train", 3, [10, 1, 9]), ("test", 2, [5, 10])):
        X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        path = tmp_path / f"{split}_32x32.mat"
        sio.savemat(path, {"X": X, "y": np.array(y, dtype=np.uint8).reshape(n, 1)})
        url, name, _ = tvd.SVHN.split_list[split]
        monkeypatch.setitem(tvd.SVHN.split_list, split, [url, name, md5(path)])
        arrays[split] = X
    return tmp_path, arrays


def test_svhn_reads_mat_files_and_maps_label_10_to_0(svhn):
    root, arrays = svhn
    raw = load_raw("svhn", root)
    assert raw.x_train.shape == (3, 3, 32, 32) and raw.x_test.shape == (2, 3, 32, 32)
    assert raw.x_train.dtype == torch.uint8 and raw.y_train.dtype == torch.int64
    X = arrays["train"]
    assert raw.x_train[2, 1, 5, 7].item() == X[5, 7, 1, 2]  # (n, c, h, w) <- (h, w, c, n)
    assert raw.x_train[0, 2, 31, 3].item() == X[31, 3, 2, 0]
    assert raw.y_train.tolist() == [0, 1, 9] and raw.y_test.tolist() == [5, 0]
    assert raw.num_classes == 10


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">I", 0x800 + array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def write_fashion(root, monkeypatch, compress: bool):
    raw_dir = root / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True)
    rng = np.random.default_rng(3)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.array([0, 9, 3, 3, 1], dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.array([8, 2], dtype=np.uint8)}
    resources = []
    for stem, array in arrays.items():
        name = stem + ".gz"
        write_idx(raw_dir / (name if compress else stem), array, compress)
        resources.append((name, md5(raw_dir / name) if compress else "unused"))
    monkeypatch.setattr(tvd.FashionMNIST, "resources", resources)
    return arrays


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_fashion_mnist_reads_idx_files(tmp_path, monkeypatch, compress):
    arrays = write_fashion(tmp_path, monkeypatch, compress)
    raw = load_raw("fashion_mnist", tmp_path)
    assert raw.x_train.shape == (5, 1, 28, 28) and raw.x_test.shape == (2, 1, 28, 28)
    assert raw.input_shape == (1, 28, 28) and raw.num_classes == 10
    assert torch.equal(raw.x_train[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert raw.y_train.tolist() == [0, 9, 3, 3, 1] and raw.y_test.tolist() == [8, 2]


@pytest.mark.parametrize("name, label", [("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100"),
                                         ("svhn", "SVHN"), ("fashion_mnist", "Fashion-MNIST")])
def test_missing_dataset_is_one_clear_line(tmp_path, name, label):
    root = tmp_path / "nothing-here"
    with pytest.raises(DatasetError) as info:
        load_raw(name, root)
    message = str(info.value)
    assert "\n" not in message and label in message and str(root) in message and "download" in message


def flip_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_cifar_file_fails_integrity_check(cifar10):
    root = cifar10[0]
    flip_byte(root / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DatasetError, match="CIFAR-10 not found or corrupt") as info:
        load_raw("cifar10", root)
    assert "\n" not in str(info.value) and str(root) in str(info.value)


def test_corrupt_svhn_file_fails_integrity_check(svhn):
    root = svhn[0]
    flip_byte(root / "test_32x32.mat")
    with pytest.raises(DatasetError, match="SVHN not found or corrupt"):
        load_raw("svhn", root)


def test_corrupt_fashion_gz_is_not_unpacked(tmp_path, monkeypatch):
    write_fashion(tmp_path, monkeypatch, compress=True)
    flip_byte(tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DatasetError, match="Fashion-MNIST not found or corrupt"):
        load_raw("fashion_mnist", tmp_path)
    assert not (tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").exists()


def test_unknown_name_and_image_dataset_options_are_rejected(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'.*cifar10"):
        load_raw("imagenet", tmp_path)
    with pytest.raises(DatasetError, match="unknown option.*'augment'"):
        load_raw("cifar10", tmp_path, augment=True)
    assert {"cifar10", "cifar100", "svhn", "fashion_mnist", "mnist1d"} <= set(DATASETS)


def test_mnist1d_is_deterministic_per_seed_and_sized_by_num_samples(tmp_path):
    a = load_raw("mnist1d", tmp_path, num_samples=200, seed=1)
    b = load_raw("mnist1d", tmp_path, num_samples=200, seed=1)
    c = load_raw("mnist1d", tmp_path, num_samples=200, seed=2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert len(a.x_train) + len(a.x_test) == 200 and len(a.y_train) == len(a.x_train) == 160
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert a.input_shape == (40,) and a.num_classes == 10 and set(a.y_train.tolist()) <= set(range(10))


def test_mnist1d_rejects_unknown_options_and_ragged_sizes(tmp_path):
    with pytest.raises(DatasetError, match="'num_sample'.*allowed.*num_samples") as info:
        load_raw("mnist1d", tmp_path, num_sample=100)
    assert "'url'" not in str(info.value)
    with pytest.raises(DatasetError, match="url"):
        load_raw("mnist1d", tmp_path, url="http://example.invalid")
    with pytest.raises(DatasetError, match="multiple of 10"):
        load_raw("mnist1d", tmp_path, num_samples=205)


def test_prepare_then_load_normalises_images_to_minus_one_one(cifar10, tmp_path):
    root, train_rows, train_labels, _ = cifar10
    out = tmp_path / "prepared" / "cifar10.pt"
    prepare_dataset(DatasetSpec("cifar10"), root, False, out)
    assert [p.name for p in out.parent.iterdir()] == ["cifar10.pt"]  # no leftover partial file
    stored = load_torch(out)
    assert stored["x_train"].dtype == torch.uint8 and stored["name"] == "cifar10" and stored["options"] == {}
    data = load_prepared(out)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.x_train.min() >= -1 and data.x_train.max() <= 1
    v = torch.from_numpy(train_rows.reshape(10, 3, 32, 32)).float()
    assert torch.allclose(data.x_train, (v / 255 - 0.5) / 0.5, atol=1e-6, rtol=0)
    assert data.x_train[4, 2, 5, 7].item() == pytest.approx((train_rows[4, 2 * 1024 + 5 * 32 + 7] / 255 - 0.5) / 0.5)
    assert data.y_train.tolist() == train_labels and data.num_classes == 10 and data.input_shape == (3, 32, 32)


def test_prepare_then_load_passes_mnist1d_through(tmp_path):
    spec = DatasetSpec("mnist1d", {"num_samples": 100, "seed": 3})
    out = tmp_path / f"{spec.key}.pt"
    prepare_dataset(spec, tmp_path, False, out)
    raw = load_raw("mnist1d", tmp_path, num_samples=100, seed=3)
    data = load_prepared(out)
    assert torch.equal(data.x_train, raw.x_train) and torch.equal(data.y_test, raw.y_test)
    assert data.input_shape == (40,) and load_torch(out)["options"] == spec.options


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_prepared_on_cuda(cifar10, tmp_path):
    out = tmp_path / "c.pt"
    prepare_dataset(DatasetSpec("cifar10"), cifar10[0], False, out)
    cpu, gpu = load_prepared(out), load_prepared(out, "cuda")
    assert gpu.x_train.is_cuda and gpu.y_test.is_cuda
    assert torch.allclose(gpu.x_train.cpu(), cpu.x_train, atol=1e-6, rtol=0)
