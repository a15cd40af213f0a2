"""Writing files so that an interrupted job never leaves a half-written file that looks finished."""
from __future__ import annotations

import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Iterator


def _reserve_temporary(path: Path) -> Path:
    """Create an empty, unused temporary file beside ``path`` and return its name. The kernel applies the
    umask to its mode, so the finished file is as readable as any other the user writes."""
    for attempt in itertools.count():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{attempt}.partial")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # left by a crashed process that had our pid, or taken by another thread
            continue
    raise AssertionError("unreachable")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` in one step.

    The rename is atomic on POSIX file systems, so readers see either no file or the whole file.
    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _reserve_temporary(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# -- tensor files ---------------------------------------------------------------------------------------
#
# Every tensor file the library writes (a model, an optimiser, resume or stream state, a prepared dataset,
# a split) is a dict ``{"format": TORCH_FORMAT, "sha256": <checksum of the payload>, "payload": obj}``
# saved by ``torch.save``. A plain ``torch.load(path)["payload"]`` (weights_only, PyTorch's default) reads
# it. The checksum is taken over the payload's values, not over the file's bytes (``torch.save`` does not
# write the same bytes twice): see ``payload_sha256``. ``load_torch`` loads with ``weights_only=True``, so
# a file holding any other pickled object is refused before anything in it runs, and then checks the format
# and the checksum; every failure is a ``CorruptFileError`` naming the file and what to do.

TORCH_FORMAT = "warmstart.torch/1"
# Globals allowed beyond PyTorch's own weights_only list (tensors, dtypes, torch.Size, dict, OrderedDict,
# list, tuple, str, int, float, bool, None, ...). The library's states need none: they hold only tensors
# and plain Python values. Add a type here only if a state really holds it and it cannot run code.
SAFE_GLOBALS: tuple = ()


def payload_sha256(obj: Any) -> str:
    """SHA-256 of ``obj`` walked in order: a tag per value, then its content. Tensors contribute their
    dtype, shape and bytes (row-major, on the CPU); dicts (OrderedDicts alike) their items in order; lists
    and tuples their items; None, bool, int, float (exactly, as ``float.hex``), str, bytes, torch.dtype and
    torch.device their value. Any other type (a subclass such as numpy.float64 included) raises TypeError:
    a weights_only load would refuse it."""
    import hashlib

    h = hashlib.sha256()
    _walk(obj, h.update)
    return h.hexdigest()


def _walk(obj: Any, put) -> None:
    # exact types, not isinstance: a subclass (numpy.float64 is a float) would be pickled as its own
    # class, which a weights_only load refuses; better to find out when saving
    import collections

    import torch

    kind = type(obj)
    if obj is None:
        put(b"N")
    elif kind is bool:
        put(b"B1" if obj else b"B0")
    elif kind is int:
        put(b"I%d;" % obj)
    elif kind is float:
        put(b"F" + obj.hex().encode() + b";")
    elif kind is str:
        data = obj.encode("utf-8", "surrogatepass")
        put(b"S%d:" % len(data) + data)
    elif kind in (bytes, bytearray):
        put(b"Y%d:" % len(obj) + bytes(obj))
    elif kind in (torch.Tensor, torch.nn.Parameter):
        if obj.layout != torch.strided or obj.is_quantized:
            raise TypeError(f"cannot checksum a {obj.layout} tensor{' (quantized)' if obj.is_quantized else ''}")
        t = obj.detach().resolve_conj().resolve_neg().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy()
        put(f"T{t.dtype};{tuple(t.shape)};{raw.nbytes}:".encode())
        put(memoryview(raw))
    elif kind is torch.dtype:
        put(f"D{obj};".encode())
    elif kind is torch.device:
        put(f"V{obj};".encode())
    elif kind in (dict, collections.OrderedDict):
        put(b"{%d:" % len(obj))
        for key, value in obj.items():
            _walk(key, put)
            _walk(value, put)
    elif kind in (list, tuple, torch.Size):
        put((b"[%d:" if kind is list else b"(%d:") % len(obj))
        for value in obj:
            _walk(value, put)
    else:
        raise TypeError(f"a {type(obj).__module__}.{type(obj).__qualname__} cannot be saved as a tensor file: "
                        "only tensors and plain values (dict, list, tuple, str, int, float, bool, None)")


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """Save ``obj`` (tensors and plain values) to ``path`` atomically, with its format and checksum."""
    import torch  # here, not at the top: planning uses this module and must not pay torch's import

    box = {"format": TORCH_FORMAT, "sha256": payload_sha256(obj), "payload": obj}
    with atomic_path(path) as tmp:
        torch.save(box, tmp)


def load_torch(path: str | os.PathLike, *, what: str = "the file", fix: str | None = None,
               map_location=None) -> Any:
    """The payload of a ``save_torch`` file. Raises ``CorruptFileError`` (message: the file, ``what`` is
    wrong with it, then ``fix``) when the file is truncated or unreadable, holds pickled objects other than
    tensors and plain values (refused unread: nothing in it runs), is not in ``TORCH_FORMAT``, or its
    checksum does not match its contents. A missing file raises FileNotFoundError as usual."""
    import pickle

    import torch

    from warmstart.core.errors import CorruptFileError

    path = Path(path)
    fix = fix or f"Delete {path} and run the job that writes it again"
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            box = torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e):
            raise CorruptFileError(path, f"{what} is unreadable ({_first_line(e)})", fix) from None
        try:
            refused = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or "?"
        except Exception:  # noqa: BLE001 - only for the message
            refused = "?"
        raise CorruptFileError(path, f"{what} holds pickled objects ({refused}) that loading would run code "
                                     "for; it was refused unread", fix) from None
    except Exception as e:  # noqa: BLE001 - truncated zip (RuntimeError), empty (EOFError), not a torch file
        raise CorruptFileError(path, f"{what} is truncated or not a PyTorch file "
                                     f"({type(e).__name__}: {_first_line(e)})", fix) from None
    if not (isinstance(box, dict) and box.keys() == {"format", "sha256", "payload"}
            and box["format"] == TORCH_FORMAT and isinstance(box["sha256"], str)):
        found = repr(box.get("format")) if isinstance(box, dict) and "format" in box else \
            f"a {type(box).__name__} without warmstart's format record"
        raise CorruptFileError(path, f"{what} is not in the format {TORCH_FORMAT!r} this version of warmstart "
                                     f"reads (found {found}: written by plain torch.save or another version)",
                               fix)
    try:
        actual = payload_sha256(box["payload"])
    except TypeError as e:
        raise CorruptFileError(path, f"{what} holds a value the format does not allow ({e})", fix) from None
    if actual != box["sha256"]:
        raise CorruptFileError(path, f"{what} does not match its checksum (sha256 recorded "
                                     f"{box['sha256'][:12]}..., contents {actual[:12]}...): it was damaged "
                                     "after it was written", fix)
    return box["payload"]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "no details"


def save_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_parquet(frame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_text_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` to ``path`` atomically unless it already holds exactly that; returns whether it
    wrote. The file's modification time therefore changes only when its content does."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return True
