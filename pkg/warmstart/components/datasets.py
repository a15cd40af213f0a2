"""Dataset registry: raw tensors from the official files, a compact prepared file, and device tensors.

``load_raw`` reads a dataset through torchvision's own classes (their md5 integrity checks included) or,
for mnist1d, generates it offline. ``prepare_dataset`` stores the raw tensors once (uint8 images stay
uint8, so the file is small); ``load_prepared`` puts them on the training device and normalises them there.
Adding a dataset is one decorated function here; its options are its keyword parameters, checked (names
and annotated types) before any job runs. numpy and torch are imported where data is read: planning
reads this registry and must not pay their import.

Every dataset also takes the options of ``select`` (``COMMON_OPTIONS``): ``classes`` keeps only the named
classes (labels renumbered 0..K-1 in the dataset's own class order) and ``subset: N`` keeps a seeded,
class-stratified N of the training samples. Datasets read from the user's files (``image_folder``,
``tensor_file``: ``warmstart.components.file_datasets``; ``table``: ``warmstart.components.table_dataset``)
also check their files when the config is planned, and carry a fingerprint of them in their options
(``planned_options``), so an edit on disk gives the prepared file, and the runs on it, a new name. Those
modules add their entries to this registry, so this one cannot import them: the package's ``__init__``
does, so importing any component registers every dataset.
"""
from __future__ import annotations

import gzip
import inspect
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from warmstart.core.errors import DatasetError, SpecError
from warmstart.core.io import atomic_path, save_torch
from warmstart.core.registry import Registry, check_options

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass
class RawDataset:
    """Unnormalised tensors: uint8 (N, C, H, W) images, or float32 (N, L) vectors; int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    classes: list[str]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


@dataclass
class DeviceData:
    """Training-ready tensors on one device: float32 inputs (images scaled to [-1, 1]), int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]


# The options every dataset takes, applied by ``select`` after its loader (annotations as check_options reads them)
COMMON_OPTIONS: dict[str, tuple[str, Any]] = {
    "classes": ("list[str | int] | None", None),  # keep only these classes (names; an int names str(int))
    "subset": ("int | None", None),  # keep a class-stratified N of the training samples
    "subset_seed": ("int", 0),  # the seed of that choice
}


def _with_common_options(fn: Callable) -> Callable:
    """A stand-in for ``fn`` whose signature also lists ``COMMON_OPTIONS``, for ``check_options``."""
    params = list(inspect.signature(fn).parameters.values())
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
               for n, (a, d) in COMMON_OPTIONS.items() if n not in {p.name for p in params}]

    def stand_in(*args, **kwargs):  # never called
        raise NotImplementedError

    stand_in.__signature__ = inspect.Signature(params)
    return stand_in


def _check_dataset(fn: Callable, options: Mapping[str, Any], key: str) -> None:
    """The dataset registry's check: the loader's own options and the common ones (names, types), the
    common ones' values, then, for a dataset read from the user's files, those files (``check_files``)."""
    check_options(_with_common_options(fn), options, key, skip=2)
    subset, classes = options.get("subset"), options.get("classes")
    if subset is not None and subset < 1:
        raise SpecError(f"{key}.subset: must be a positive number of training samples, got {subset!r}")
    if options.get("subset_seed", 0) < 0:
        raise SpecError(f"{key}.subset_seed: must be >= 0, got {options['subset_seed']!r}")
    if classes is not None:
        names = [str(c) for c in classes]
        if not names or len(set(names)) != len(names):
            raise SpecError(f"{key}.classes: must list at least one class, each once, got {classes!r}")
    check_files = getattr(fn, "check_files", None)
    if check_files is not None:
        check_files(options, key)


DATASETS: Registry[Callable[..., RawDataset]] = Registry("dataset", check=_check_dataset)


def register_dataset(name: str):
    """Register ``fn(root: Path, download: bool, **options) -> RawDataset`` under ``name``."""
    def decorate(fn):
        DATASETS.add(name, fn)
        return fn
    return decorate


def load_raw(name: str, data_dir: str | os.PathLike, download: bool = False, **options: Any) -> RawDataset:
    """Load dataset ``name`` from ``data_dir`` (downloading into it if ``download``)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    try:
        fn = DATASETS.check(name, options, f"dataset {name!r}")
    except SpecError as e:
        raise DatasetError(str(e)) from None
    common = {k: options.pop(k) for k in COMMON_OPTIONS if k in options}
    raw = fn(Path(data_dir).expanduser(), bool(download), **options)
    return select(raw, f"dataset {name!r}", **common)


def planned_options(name: str, options: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The options a planned ``DatasetSpec`` carries: the config's, checked, plus, for a dataset read from
    the user's files, ``fingerprint``: a hash of the files' relative paths, sizes and modification times
    (the loader's ``fingerprint``, set by ``file_datasets.attach_file_checks``), so that editing, adding or
    removing a file renames the prepared file and re-prepares that dataset only. The loader checks it again
    when it reads the files. ``options`` are those ``DATASETS.check`` passed (the planner checks them first:
    ``labels.resolved``)."""
    fn = DATASETS.lookup(name, key)
    fingerprint = getattr(fn, "fingerprint", None)
    if fingerprint is None:
        return dict(options)
    if "fingerprint" in options:
        raise SpecError(f"{key}.fingerprint: is computed from the files when the workflow plans; remove it")
    return {**options, "fingerprint": fingerprint(options)}


def select(raw: RawDataset, what: str, classes: list | None = None, subset: int | None = None,
           subset_seed: int = 0) -> RawDataset:
    """Keep only ``classes`` (by name; labels renumbered 0..K-1 in the dataset's class order, in training
    and test sets alike), then a class-stratified ``subset`` of the training samples: each kept class
    gets one sample, and the remaining N - K are shared in proportion to the classes' remaining sizes
    (largest remainders, ties to the lower label), each class's drawn by a permutation seeded by
    ``subset_seed``. The chosen samples keep their order in the file. The test set is not subsetted."""
    import numpy as np
    import torch

    if classes is None and subset is None:
        return raw
    names = [str(c) for c in raw.classes]
    keep = list(range(raw.num_classes))
    if classes is not None:
        wanted = [str(c) for c in classes]
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise DatasetError(f"{what}: classes {unknown} are not among its classes {names}; "
                               f"edit the dataset's 'classes' option")
        keep = [i for i, c in enumerate(names) if c in wanted]
    table = torch.full((raw.num_classes,), -1, dtype=torch.int64)
    table[keep] = torch.arange(len(keep))

    def kept(x, y):
        new = table[y]
        mask = new >= 0
        return x[mask], new[mask]

    x_train, y_train = kept(raw.x_train, raw.y_train)
    x_test, y_test = kept(raw.x_test, raw.y_test)
    counts = torch.bincount(y_train, minlength=len(keep)).tolist()
    empty = [names[keep[k]] for k, n in enumerate(counts) if n == 0]
    if empty:
        raise DatasetError(f"{what}: classes {empty} have no training samples; drop them with the "
                           f"dataset's 'classes' option")
    if subset is not None:
        picks = stratified_counts(counts, subset, what)
        rng = np.random.default_rng(subset_seed)
        y_np = y_train.numpy()
        chosen = [rng.permutation(np.flatnonzero(y_np == k))[:n] for k, n in enumerate(picks)]
        index = torch.as_tensor(np.sort(np.concatenate(chosen)), dtype=torch.int64)
        x_train, y_train = x_train[index], y_train[index]
    return RawDataset(x_train, y_train, x_test, y_test, len(keep), [names[i] for i in keep])


def stratified_counts(counts: list[int], n: int, what: str = "subset") -> list[int]:
    """How many samples of each class a stratified subset of ``n`` takes (see ``select``)."""
    total, k = sum(counts), len(counts)
    if n > total:
        raise DatasetError(f"{what}: subset {n} is more than its {total} training samples; lower 'subset'")
    if n < k:
        raise DatasetError(f"{what}: subset {n} is fewer than its {k} classes (each keeps one at least); "
                           f"raise 'subset' or keep fewer 'classes'")
    rest, spare = n - k, max(total - k, 1)  # integer arithmetic: exact shares and remainders
    shares = [divmod(rest * (c - 1), spare) for c in counts]
    picks = [1 + q for q, _ in shares]
    left = n - sum(picks)
    by_remainder = sorted(range(k), key=lambda i: (-shares[i][1], i))
    for i in by_remainder[:left]:
        picks[i] += 1
    return picks


def prepare_dataset(spec, data_dir: str | os.PathLike, download: bool, out_path: str | os.PathLike) -> None:
    """Load ``spec`` (a ``DatasetSpec``) and save its tensors to ``out_path`` in one atomic step."""
    raw = load_raw(spec.name, data_dir, download, **spec.options)
    save_torch({
        "x_train": raw.x_train.contiguous(), "y_train": raw.y_train.contiguous(),
        "x_test": raw.x_test.contiguous(), "y_test": raw.y_test.contiguous(),
        "num_classes": int(raw.num_classes), "classes": [str(c) for c in raw.classes],
        "input_shape": list(raw.input_shape), "name": spec.name, "options": dict(spec.options),
    }, out_path)


def load_prepared(path: str | os.PathLike, device: str | torch.device = "cpu") -> DeviceData:
    """Load a ``prepare_dataset`` file onto ``device``; uint8 images become (x/255 - 0.5)/0.5."""
    import torch

    from warmstart.core.io import load_torch

    d = load_torch(path, what="the prepared dataset", map_location="cpu",
                   fix=f"Delete {path} and run the workflow again: it prepares the dataset again")

    def inputs(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)  # move uint8 first: a quarter of the bytes of float32 cross the bus
        if x.dtype == torch.uint8:
            # mean 0.5, std 0.5 per channel, as in the authors' public code
            return x.float().div_(255).sub_(0.5).div_(0.5)
        return x.float()  # mnist1d's generator already standardised it

    return DeviceData(
        x_train=inputs(d["x_train"]), y_train=d["y_train"].to(device, torch.int64),
        x_test=inputs(d["x_test"]), y_test=d["y_test"].to(device, torch.int64),
        num_classes=int(d["num_classes"]), input_shape=tuple(d["input_shape"]),
    )


# -- torchvision datasets ---------------------------------------------------------------------------

def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _open(label: str, layout: str, root: Path, download: bool, make: Callable[[bool], Any]) -> tuple[Any, Any]:
    """Build torchvision's train and test objects, turning its errors into one actionable line."""
    try:
        return make(True), make(False)
    except ImportError as e:
        raise DatasetError(f"{label} needs scipy to read its .mat files ({_one_line(e)}): "
                           f"install it with 'pip install scipy'") from e
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, AssertionError, ValueError) as e:
        if download:
            raise DatasetError(f"could not download {label} into {root} ({_one_line(e)}): check the network, "
                               f"or place {layout} there and set download: false in config.yaml") from e
        raise DatasetError(f"{label} not found or corrupt under {root}: set download: true in config.yaml, "
                           f"or place {layout} there") from e


def _images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    import numpy as np
    import torch

    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.uint8)


def _labels(y: Any) -> torch.Tensor:
    import numpy as np
    import torch

    return torch.as_tensor(np.asarray(y), dtype=torch.int64)


def _cifar(cls, label: str, folder: str, root: Path, download: bool) -> RawDataset:
    train, test = _open(label, f"the official {folder!r} folder", root, download,
                        lambda tr: cls(str(root), train=tr, download=download))
    # torchvision keeps CIFAR as NHWC for PIL; the models want NCHW.
    return RawDataset(_images(train.data.transpose(0, 3, 1, 2)), _labels(train.targets),
                      _images(test.data.transpose(0, 3, 1, 2)), _labels(test.targets),
                      len(train.classes), list(train.classes))


@register_dataset("cifar10")
def _cifar10(root: Path, download: bool) -> RawDataset:
    from torchvision.datasets import CIFAR10
    return _cifar(CIFAR10, "CIFAR-10", "cifar-10-batches-py", root, download)


@register_dataset("cifar100")
def _cifar100(root: Path, download: bool) -> RawDataset:
    from torchvision.datasets import CIFAR100
    return _cifar(CIFAR100, "CIFAR-100", "cifar-100-python", root, download)


@register_dataset("svhn")
def _svhn(root: Path, download: bool) -> RawDataset:
    from torchvision.datasets import SVHN
    train, test = _open("SVHN", "the official 'train_32x32.mat' and 'test_32x32.mat' files", root, download,
                        lambda tr: SVHN(str(root), split="train" if tr else "test", download=download))
    # torchvision already gives NCHW and maps the digit 0's label 10 to 0.
    return RawDataset(_images(train.data), _labels(train.labels), _images(test.data), _labels(test.labels),
                      10, [str(i) for i in range(10)])


def _unpack_verified_gz(cls, root: Path) -> None:
    # torchvision's MNIST classes only read the unpacked idx files and unpack the .gz files only on
    # download=True, so officially placed .gz files would count as missing. Unpack those whose md5
    # matches (the check torchvision's download path makes), atomically so a crash leaves no short file.
    from torchvision.datasets.utils import check_integrity
    raw = root / cls.__name__ / "raw"
    for filename, md5 in cls.resources:
        gz, target = raw / filename, raw / Path(filename).stem
        if not target.exists() and check_integrity(str(gz), md5):
            with gzip.open(gz, "rb") as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)


@register_dataset("fashion_mnist")
def _fashion_mnist(root: Path, download: bool) -> RawDataset:
    from torchvision.datasets import FashionMNIST
    _unpack_verified_gz(FashionMNIST, root)
    train, test = _open("Fashion-MNIST", "the official .gz idx files in 'FashionMNIST/raw/'", root, download,
                        lambda tr: FashionMNIST(str(root), train=tr, download=download))
    return RawDataset(_images(train.data).unsqueeze(1), _labels(train.targets),
                      _images(test.data).unsqueeze(1), _labels(test.targets),
                      len(train.classes), list(train.classes))


# -- generated datasets -----------------------------------------------------------------------------

@register_dataset("mnist1d")
def _mnist1d(root: Path, download: bool, num_samples: int | None = None, train_split: float | None = None,
             template_len: int | None = None, padding: list[int] | None = None, scale_coeff: float | None = None,
             max_translation: int | None = None, corr_noise_scale: float | None = None,
             iid_noise_scale: float | None = None, shear_scale: float | None = None, shuffle_seq: bool | None = None,
             final_seq_length: int | None = None, seed: int | None = None) -> RawDataset:
    """Generate MNIST-1D offline. The options are ``mnist1d.data.get_dataset_args()``'s (but 'url'),
    listed here so that the planner can check them without importing mnist1d; None keeps its default."""
    options = {k: v for k, v in locals().items() if k not in ("root", "download") and v is not None}
    import torch
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for key, value in options.items():
        setattr(args, key, value)
    n = args.num_samples
    # The generator makes num_samples // 10 per class; anything else would silently give fewer samples.
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0 or n % 10:
        raise DatasetError(f"dataset 'mnist1d': num_samples must be a positive multiple of 10, got {n!r}")
    d = make_dataset(args)
    return RawDataset(torch.as_tensor(d["x"], dtype=torch.float32), _labels(d["y"]),
                      torch.as_tensor(d["x_test"], dtype=torch.float32), _labels(d["y_test"]),
                      10, [str(i) for i in range(10)])

