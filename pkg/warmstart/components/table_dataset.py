"""The ``table`` dataset: one sample per row of the user's Parquet or CSV file, read with pyarrow (imported
where a table is read: when the workflow plans, only its schema). Its paths, plan-time check, fingerprint
and labels are those of every dataset read from files (``warmstart.components.file_datasets``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from warmstart.components.datasets import RawDataset, register_dataset
from warmstart.components.file_datasets import (as_tensor, attach_file_checks, check_fingerprint, check_suffix,
                                                class_labels, files_fingerprint, resolve)
from warmstart.core.errors import DatasetError, SpecError

TABLE_SUFFIXES = (".parquet", ".pq", ".csv")


def _table_schema(f: Path, key: str):
    """The pyarrow schema of a Parquet file (its footer) or a CSV file (its first block)."""
    try:
        if f.suffix.lower() == ".csv":
            from pyarrow import csv
            with csv.open_csv(f) as reader:
                return reader.schema
        import pyarrow.parquet as pq
        return pq.read_schema(f)
    except Exception as e:  # noqa: BLE001 - pyarrow's errors are many classes; the advice is one
        raise SpecError(f"{key}: cannot read {str(f)!r} as a table ({' '.join(str(e).split())})") from None


def _check_table(options: Mapping[str, Any], key: str) -> None:
    import pyarrow as pa

    check_suffix(options, key, ("path", "test_path"), TABLE_SUFFIXES)
    for field in ("path", "test_path"):
        if options.get(field) is None:
            continue
        f = resolve(options[field])
        schema = _table_schema(f, f"{key}.{field}")
        columns = list(schema.names)
        label = options["label_column"]
        if label not in columns:
            raise SpecError(f"{key}.label_column: no column {label!r} in {str(f)!r}; its columns: {columns}")
        features = options.get("feature_columns")
        if features is not None:
            missing = [c for c in features if c not in columns]
            if missing or not features:
                raise SpecError(f"{key}.feature_columns: {missing or 'none'} not in {str(f)!r}; "
                                f"its columns: {columns}")
            if label in features:
                raise SpecError(f"{key}.feature_columns: lists the label column {label!r}")
        else:
            features = [c for c in columns if c != label]
            if not features:
                raise SpecError(f"{key}.path: {str(f)!r} has no feature column beside {label!r}")
        for c in features:
            t = schema.field(c).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                    or pa.types.is_decimal(t)):
                raise SpecError(f"{key}.feature_columns: column {c!r} of {str(f)!r} is {t}, not numeric; "
                                f"list the numeric columns in 'feature_columns' or encode it as numbers")


def _read_table(f: Path, columns: list[str], what: str):
    try:
        if f.suffix.lower() == ".csv":
            from pyarrow import csv
            return csv.read_csv(f, convert_options=csv.ConvertOptions(include_columns=columns))
        import pyarrow.parquet as pq
        return pq.read_table(f, columns=columns)
    except Exception as e:  # noqa: BLE001
        raise DatasetError(f"cannot read {what} ({' '.join(str(e).split())})") from None


@register_dataset("table")
def table(root: Path, download: bool, path: str, label_column: str, feature_columns: list[str] | None = None,
          test_path: str | None = None, standardize: bool = True, fingerprint: str | None = None) -> RawDataset:
    """One sample per row of a Parquet or CSV file (``path``; ``test_path``: optional test rows): the
    classes are the values of ``label_column`` (integers: their own indices; anything else numbered in
    sorted order), the features ``feature_columns`` (default: every other column), numeric, stored
    float32; ``standardize`` scales each feature to mean 0, std 1 over the training rows."""
    import numpy as np
    import torch

    files = [resolve(path)] + ([resolve(test_path)] if test_path is not None else [])
    what = f"table {str(files[0])!r}"
    check_fingerprint(fingerprint, files_fingerprint(files), what)
    if feature_columns is None:
        feature_columns = [c for c in _table_schema(files[0], what).names if c != label_column]
    frames = []
    for f in files:
        t = _read_table(f, [label_column, *feature_columns], f"table {str(f)!r}")
        for c in [label_column, *feature_columns]:
            if t.column(c).null_count:
                raise DatasetError(f"table {str(f)!r}: column {c!r} has {t.column(c).null_count} empty "
                                   f"value(s); fill or drop those rows")
        x = np.stack([t.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in feature_columns], 1)
        frames.append((x, t.column(label_column).to_numpy(zero_copy_only=False)))
    x, y = frames[0]
    x_test, y_test = frames[1] if len(frames) > 1 else (x[:0], y[:0])
    if not len(x):
        raise DatasetError(f"{what}: has no rows")
    y, y_test, names = class_labels(y, y_test, None, what, indices=False)
    if standardize:
        mean, std = x.mean(0), x.std(0)
        std[std == 0] = 1.0
        x, x_test = (x - mean) / std, (x_test - mean) / std
    return RawDataset(as_tensor(x, torch.float32), as_tensor(y), as_tensor(x_test, torch.float32), as_tensor(y_test),
                      len(names), names)


attach_file_checks(table, _check_table,
        lambda options: [resolve(options[k]) for k in ("path", "test_path") if options.get(k) is not None])
