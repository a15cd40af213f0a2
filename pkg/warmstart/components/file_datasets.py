"""Datasets read from the user's own files, each one entry of the dataset registry, set up by config alone,
and what every such dataset shares: paths, the plan-time file check, the files' fingerprint, labels.

* ``image_folder``: torchvision's ImageFolder layout (one sub-folder per class, named by the class),
  every image resized to ``size`` and stored uint8 NCHW like the built-in image sets;
* ``tensor_file``: a ``.pt`` (a dict) or ``.npz`` file with arrays ``x`` and ``y`` (and optionally
  ``x_test``, ``y_test`` and ``classes``, the class names);
* ``table`` (``warmstart.components.table_dataset``): a Parquet or CSV file (read with pyarrow), one row
  per sample: a label column and numeric feature columns (tabular data, stored float32, standardised by
  default).

A relative ``path`` is relative to the working directory (the directory snakemake runs in). Every check
that needs only the file system and the files' headers runs when the workflow plans (``check_files``,
through the dataset registry's check: a missing folder or file, an empty class, a missing label or
feature column, an unknown class name fail before any job starts, naming the config key). What needs the
contents (an unreadable image, mixed channel counts) fails in the prepare job, naming the file and what to
do. The planner adds ``fingerprint`` (``fingerprint``: a hash of the files' relative paths, sizes and
modification times) to the options, so an edited, added or removed file gives the prepared file a new
name and re-prepares that dataset only; the loader recomputes it and refuses files that changed after
planning. numpy, PIL and torch are imported where the files are read.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from warmstart.components.datasets import RawDataset, register_dataset
from warmstart.core.errors import DatasetError, SpecError

# torchvision's ImageFolder extensions (torchvision.datasets.folder.IMG_EXTENSIONS), without importing it
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # the `channels` option -> the PIL mode images convert to
TENSOR_SUFFIXES = (".pt", ".npz")


def resolve(path: str) -> Path:
    """A config path: ``~`` expanded, relative to the working directory."""
    return Path(os.path.abspath(Path(path).expanduser()))


def files_fingerprint(files: list[Path]) -> str:
    """sha256 of each file's absolute path, size and modification time (ns), in sorted order: cheap
    enough to compute whenever the workflow plans, and changed by any edit, addition or removal (also by
    a touch or a copy that does not keep modification times, which re-prepares the same contents)."""
    entries = []
    for f in sorted(files):
        st = f.stat()
        entries.append([str(f), st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def as_tensor(a, dtype=None):
    """A torch tensor of the numpy array ``a``; an empty one with fresh strides (numpy may give an empty
    array stride 0, which the checksum of a saved tensor cannot view as bytes)."""
    import numpy as np
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a))
    t = t if dtype is None else t.to(dtype)
    return t if t.numel() else torch.empty(tuple(t.shape), dtype=t.dtype)


def check_fingerprint(fingerprint: str | None, now: str, what: str) -> None:
    if fingerprint is not None and fingerprint != now:
        raise DatasetError(f"{what}: the files changed after the workflow planned this job (fingerprint "
                           f"{fingerprint}, now {now}); run snakemake again: it plans the new files")


def attach_file_checks(fn: Callable, check_files: Callable[[Mapping[str, Any], str], None],
            files: Callable[[Mapping[str, Any]], list[Path]]) -> Callable:
    """Give a loader its plan-time file check and its fingerprint (read by ``datasets._check_dataset``
    and ``datasets.planned_options``)."""
    fn.check_files = check_files
    fn.fingerprint = lambda options: files_fingerprint(files(options))
    return fn


# -- image folders ------------------------------------------------------------------------------------------

def scan_image_folder(root: Path, key: str, error=SpecError) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(image file, class index)]) of an ImageFolder-layout folder: each sub-folder is a
    class (sorted by name, hidden ones skipped), its images (by extension, searched recursively, as
    torchvision does) sorted by path. A missing folder, a folder without sub-folders and a class without
    images raise ``error`` naming ``key``."""
    if not root.is_dir():
        raise error(f"{key}: no such folder {str(root)!r} (a relative path is relative to the working "
                    f"directory, {os.getcwd()})")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise error(f"{key}: {str(root)!r} has no class sub-folders; an image folder holds one sub-folder "
                    f"per class (torchvision's ImageFolder layout: {root}/<class>/<image>.png)")
    samples = []
    for index, name in enumerate(classes):
        found = []
        for folder, _, names in os.walk(root / name, followlinks=True):
            found += [Path(folder) / n for n in names
                      if n.lower().endswith(IMG_EXTENSIONS) and not n.startswith(".")]
        if not found:
            raise error(f"{key}: class folder {str(root / name)!r} has no images (extensions "
                        f"{', '.join(IMG_EXTENSIONS)}); add images or remove the folder")
        samples += [(f, index) for f in sorted(found)]
    return classes, samples


def _image_folders(options: Mapping[str, Any]) -> list[tuple[str, Path]]:
    out = [("path", resolve(options["path"]))]
    if options.get("test_path") is not None:
        out.append(("test_path", resolve(options["test_path"])))
    return out


def _check_image_folder(options: Mapping[str, Any], key: str) -> None:
    size, channels = options.get("size"), options.get("channels")
    if size is not None:
        sizes = [size] if isinstance(size, int) else list(size)
        if len(sizes) not in (1, 2) or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise SpecError(f"{key}.size: must be a positive integer or [height, width], got {size!r}")
    if channels is not None and channels not in CHANNEL_MODES:
        raise SpecError(f"{key}.channels: must be one of {sorted(CHANNEL_MODES)} (or left out: every image's "
                        f"own), got {channels!r}")
    train_classes = None
    for field, root in _image_folders(options):
        classes, _ = scan_image_folder(root, f"{key}.{field}")
        if train_classes is None:
            train_classes = classes
        elif set(classes) - set(train_classes):
            raise SpecError(f"{key}.test_path: classes {sorted(set(classes) - set(train_classes))} are not "
                            f"among the training folder's {train_classes}")
    wanted = options.get("classes")
    if wanted is not None:
        unknown = [str(c) for c in wanted if str(c) not in train_classes]
        if unknown:
            raise SpecError(f"{key}.classes: {unknown} are not class folders of {options['path']!r}; "
                            f"allowed: {train_classes}")


def _image_files(options: Mapping[str, Any]) -> list[Path]:
    return [f for field, root in _image_folders(options)
            for f, _ in scan_image_folder(root, f"dataset option {field}")[1]]


def _read_images(samples: list[tuple[Path, int]], size, channels: int | None, first: list) -> "Any":
    """uint8 (N, C, H, W) of the images, converted to ``channels`` and resized to ``size`` (h, w).
    ``first`` holds the (file, channels, (h, w)) every other image is compared with (shared by the
    training and test folders)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for path, _ in samples:
        try:
            with Image.open(path) as img:
                img.load()
                if img.mode == "P":  # a palette: its colours (with transparency, RGBA)
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                elif img.mode not in ("L", "LA", "RGB", "RGBA"):
                    img = img.convert("RGB" if len(img.getbands()) >= 3 else "L")  # 1-bit, 16-bit, CMYK ...
                if channels is not None:
                    img = img.convert(CHANNEL_MODES[channels])
                if size is not None and img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                a = np.asarray(img, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            raise DatasetError(f"cannot read image {str(path)!r} ({' '.join(str(e).split())}): replace or "
                               f"remove the file, then run the workflow again") from None
        a = a[:, :, None] if a.ndim == 2 else a
        c, hw = a.shape[2], a.shape[:2]
        if not first:
            first.append((path, c, hw))
        f_path, f_c, f_hw = first[0]
        if c != f_c:
            raise DatasetError(f"mixed channel counts: {str(path)!r} has {c} channel(s), {str(f_path)!r} has "
                               f"{f_c}; set the dataset option 'channels' (1 or 3) to convert every image")
        if hw != f_hw:
            raise DatasetError(f"mixed image sizes: {str(path)!r} is {hw[0]}x{hw[1]}, {str(f_path)!r} is "
                               f"{f_hw[0]}x{f_hw[1]}; set the dataset option 'size' to resize every image")
        arrays.append(a)
    return np.stack(arrays).transpose(0, 3, 1, 2) if arrays else None


@register_dataset("image_folder")
def image_folder(root: Path, download: bool, path: str, size: int | list[int] | None = None,
                 channels: int | None = None, test_path: str | None = None,
                 fingerprint: str | None = None) -> RawDataset:
    """An ImageFolder-layout folder (``path``; ``test_path``: an optional test folder of the same classes),
    each image resized to ``size`` (an int: square; or [height, width]; left out, all images must share
    one size) and converted to ``channels`` (1, 3 or 4; left out, all must share one count)."""
    import numpy as np
    import torch

    what = f"image folder {path!r}"
    train_root = resolve(path)
    classes, train = scan_image_folder(train_root, "dataset option path", DatasetError)
    test: list[tuple[Path, int]] = []
    if test_path is not None:
        test_classes, test = scan_image_folder(resolve(test_path), "dataset option test_path", DatasetError)
        test = [(f, classes.index(test_classes[i])) if test_classes[i] in classes else (f, -1) for f, i in test]
        if any(i < 0 for _, i in test):
            raise DatasetError(f"{what}: the test folder {test_path!r} has classes that the training folder lacks")
    check_fingerprint(fingerprint, files_fingerprint([f for f, _ in train + test]), what)
    hw = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    first: list = []
    x_train = _read_images(train, hw, channels, first)
    x_test = _read_images(test, hw, channels, first)
    if x_test is None:  # no test folder: an empty test set of the same shape
        x_test = np.zeros((0, *x_train.shape[1:]), dtype=np.uint8)
    labels = lambda s: as_tensor(np.array([i for _, i in s], dtype=np.int64))  # noqa: E731
    return RawDataset(as_tensor(x_train), labels(train), as_tensor(x_test), labels(test), len(classes), classes)


attach_file_checks(image_folder, _check_image_folder, _image_files)


# -- tensor files -------------------------------------------------------------------------------------------

def check_suffix(options: Mapping[str, Any], key: str, fields: tuple[str, ...], suffixes: tuple[str, ...]) -> None:
    for field in fields:
        if options.get(field) is None:
            continue
        f = resolve(options[field])
        if not f.is_file():
            raise SpecError(f"{key}.{field}: no such file {str(f)!r} (a relative path is relative to the "
                            f"working directory, {os.getcwd()})")
        if f.suffix.lower() not in suffixes:
            raise SpecError(f"{key}.{field}: {str(f)!r} must end in one of {list(suffixes)}")


def _check_tensor_file(options: Mapping[str, Any], key: str) -> None:
    check_suffix(options, key, ("path",), TENSOR_SUFFIXES)
    f = resolve(options["path"])
    if f.suffix.lower() == ".npz":  # its keys are the zip's directory: cheap to read when planning
        import numpy as np
        try:
            with np.load(f, allow_pickle=False) as d:
                names = set(d.files)
        except (OSError, ValueError) as e:
            raise SpecError(f"{key}.path: cannot read {str(f)!r} as .npz ({e})") from None
        missing = sorted({"x", "y"} - names)
        if missing:
            raise SpecError(f"{key}.path: {str(f)!r} lacks the array(s) {missing}; it holds {sorted(names)} "
                            f"(x and y, optionally x_test, y_test and classes)")


def class_labels(y, y_test, names, what: str, indices: bool = True):
    """int64 labels 0..K-1 and the class names: with ``indices``, integer labels are their own class
    indices (names ``str(i)`` unless given); otherwise, and for any other labels, the distinct training
    labels are numbered in sorted order."""
    import numpy as np

    y, y_test = np.asarray(y).reshape(-1), np.asarray(y_test).reshape(-1)
    if indices and np.issubdtype(y.dtype, np.integer):
        both = np.concatenate([y, y_test.astype(y.dtype)]) if y_test.size else y
        if both.size and both.min() < 0:
            raise DatasetError(f"{what}: labels must be >= 0, found {int(both.min())}")
        k = max(int(both.max()) + 1 if both.size else 0, len(names or []))
        names = [str(n) for n in names] if names is not None else [str(i) for i in range(k)]
        if len(names) < k:
            raise DatasetError(f"{what}: {len(names)} class names for labels up to {k - 1}")
        return y.astype(np.int64), y_test.astype(np.int64), names
    values = sorted(set(y.tolist()))
    unseen = sorted(set(y_test.tolist()) - set(values), key=str)
    if unseen:
        raise DatasetError(f"{what}: test labels {unseen[:5]} never occur in the training labels")
    index = {v: i for i, v in enumerate(values)}
    return (np.array([index[v] for v in y.tolist()], dtype=np.int64),
            np.array([index[v] for v in y_test.tolist()], dtype=np.int64), [str(v) for v in values])


@register_dataset("tensor_file")
def tensor_file(root: Path, download: bool, path: str, fingerprint: str | None = None) -> RawDataset:
    """Arrays ``x`` (uint8 images (N, C, H, W) or (N, H, W), stored as they are and scaled to [-1, 1] when
    loaded; any other dtype: float32 features, used as they are) and ``y`` (labels), optionally
    ``x_test``/``y_test`` and ``classes`` (names), from a ``.pt`` dict or an ``.npz`` file."""
    import numpy as np
    import torch

    f = resolve(path)
    what = f"tensor file {str(f)!r}"
    check_fingerprint(fingerprint, files_fingerprint([f]), what)
    try:
        if f.suffix.lower() == ".npz":
            with np.load(f, allow_pickle=False) as npz:
                d = {k: npz[k] for k in npz.files}
        else:
            d = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader error is the same advice
        raise DatasetError(f"cannot read {what} ({' '.join(str(e).split())}): save it with torch.save of a "
                           f"dict of tensors or numpy.savez") from None
    if not isinstance(d, Mapping) or not {"x", "y"} <= set(d):
        found = sorted(d) if isinstance(d, Mapping) else type(d).__name__
        raise DatasetError(f"{what}: needs arrays 'x' and 'y' (optionally 'x_test', 'y_test', 'classes'); "
                           f"found {found}")
    arr = lambda v: v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)  # noqa: E731
    x, y = arr(d["x"]), arr(d["y"])
    x_test = arr(d["x_test"]) if "x_test" in d else x[:0]
    y_test = arr(d["y_test"]) if "y_test" in d else y[:0]
    for xs, ys, name in ((x, y, "x"), (x_test, y_test, "x_test")):
        if len(xs) != len(ys):
            raise DatasetError(f"{what}: {name} has {len(xs)} samples but its labels {len(ys)}")
    if x.shape[1:] != x_test.shape[1:]:
        raise DatasetError(f"{what}: x_test's samples are {x_test.shape[1:]}, x's {x.shape[1:]}")
    names = None if "classes" not in d else [str(c) for c in arr(d["classes"]).tolist()]
    y, y_test, names = class_labels(y, y_test, names, what)

    def inputs(a):
        if a.dtype == np.uint8:
            return as_tensor(a[:, None] if a.ndim == 3 else a)
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise DatasetError(f"{what}: x must be numeric, got dtype {a.dtype}")
        return as_tensor(a, torch.float32)

    return RawDataset(inputs(x), as_tensor(y), inputs(x_test), as_tensor(y_test), len(names), names)


attach_file_checks(tensor_file, _check_tensor_file, lambda options: [resolve(options["path"])])

