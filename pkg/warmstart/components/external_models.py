"""Models the user already has, as entries of the model registry: any classification model of torchvision
by name (``arch: torchvision``), and the user's own model by import path (``arch: python``).

Both are regular runs (cached, warm-started, shrink-perturbed, on SLURM): the entry builds an
``nn.Module`` from the run's input shape and number of classes like every other model. Their options are
checked when the workflow plans (``Registry.check`` through ``ModelEntry.check``), which is the only
moment torchvision or the user's module is imported by the planner, and only when a config uses them.

``arch: torchvision``, ``name: resnet50`` and any keyword argument of that model (``dropout``,
``width_per_group``, ...): built with random weights (``weights`` is refused: nothing is downloaded), the
head sized to the data's classes (torchvision's ``num_classes``), the stem to its channels (the first
``Conv2d`` is rebuilt with the data's input channels, its other settings kept), and a ViT's
``image_size`` set to the data's (square) image size unless given. googlenet and inception_v3 are built
without their auxiliary heads (the training loop takes one output per sample).

``arch: python``, ``factory: "mypackage.models:build"`` (a module importable from the working directory
or installed; or ``path/to/file.py:build``): ``build(input_shape, num_classes, **options)`` must return an
``nn.Module`` mapping a batch of inputs to logits; the other options of the config entry are passed
through, checked against ``build``'s signature (names and annotated types) before any job starts.
``stackable: true`` says the model is an ``nn.Sequential`` of Flatten, Linear, Tanh and ReLU layers
without buffers, so its seeds may train as one stack (``warmstart.engine.trainees.StackedModels``).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from warmstart.core.errors import SpecError
from warmstart.components.models import MODELS, ModelEntry
from warmstart.core.registry import check_options

if TYPE_CHECKING:
    from torch import nn

# options of a torchvision model that the workflow sets itself
_SET_BY_DATA = {"num_classes": "the data's number of classes", "weights": "no pretrained weights are downloaded; "
                "warm starts come from this workflow's own runs", "progress": "nothing is downloaded"}
_NO_AUX = ("googlenet", "inception_v3")


@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """The classification models of the installed torchvision."""
    import torchvision.models

    return tuple(torchvision.models.list_models(module=torchvision.models))


def _torchvision_kwargs(name: str, options: Mapping[str, Any], input_shape: tuple[int, ...] | None) -> dict:
    kwargs = dict(options)
    if name in _NO_AUX:
        kwargs.setdefault("aux_logits", False)
    if name.startswith("vit_") and input_shape is not None and len(input_shape) == 3 \
            and input_shape[1] == input_shape[2]:
        kwargs.setdefault("image_size", input_shape[1])
    return kwargs


def _known_keywords(name: str) -> set[str]:
    """The keyword parameters a torchvision model ``name`` may take: those of its builder's module's
    functions and classes (its configuration helpers, its model class, its blocks). Several builders
    pass unknown keywords on to a ``**kwargs`` that ignores them, so a misspelt option would build."""
    import inspect
    import sys

    import torchvision.models

    module = sys.modules[torchvision.models.get_model_builder(name).__module__]
    names: set[str] = set()
    for obj in vars(module).values():
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or getattr(obj, "__module__", None) != module.__name__:
            continue
        try:
            params = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj).parameters.values()
        except (TypeError, ValueError):
            continue
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {"self", *_SET_BY_DATA}


@functools.lru_cache(maxsize=256)
def _meta_build(name: str, kwargs_json: str) -> str | None:
    """Build torchvision's ``name`` on the meta device (no memory, no weights): None if it builds, the
    error's text if its constructor refuses the options (or takes an option no part of it names). A
    model whose constructor needs real tensors cannot be built there: its options are then checked by
    name only, and by the job that builds it."""
    import torch
    import torchvision.models

    kwargs = json.loads(kwargs_json)
    unknown = sorted(set(kwargs) - _known_keywords(name))
    if unknown:
        return f"unknown option(s) {unknown}; allowed: {sorted(_known_keywords(name))}"
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            torchvision.models.get_model(name, num_classes=2, **kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        return " ".join(str(e).split()) or type(e).__name__
    except Exception:  # noqa: BLE001 - e.g. NotImplementedError: an op without a meta kernel
        return None
    return None


@dataclass(frozen=True)
class TorchvisionEntry(ModelEntry):
    def check(self, options: Mapping[str, Any], key: str) -> None:
        name = options.get("name")
        if not isinstance(name, str):
            raise SpecError(f"{key}.name: the torchvision model to build, e.g. resnet50 (a string), got {name!r}")
        try:
            known = torchvision_names()
        except ImportError as e:
            raise SpecError(f"{key}: arch torchvision needs torchvision ({e}): pip install torchvision") from None
        if name not in known:
            raise SpecError(f"{key}.name: unknown torchvision model {name!r}; known: {list(known)}")
        kwargs = {k: v for k, v in options.items() if k != "name"}
        for k in sorted(set(kwargs) & set(_SET_BY_DATA)):
            raise SpecError(f"{key}.{k}: is not an option here ({_SET_BY_DATA[k]})")
        if name in _NO_AUX and kwargs.get("aux_logits"):
            raise SpecError(f"{key}.aux_logits: must be false (the training loop takes one output per sample)")
        try:
            problem = _meta_build(name, json.dumps(_torchvision_kwargs(name, kwargs, None), sort_keys=True))
        except TypeError as e:  # options json cannot write: not config values
            problem = str(e)
        if problem is not None:
            raise SpecError(f"{key}: torchvision's {name} refuses these options ({problem}); "
                            f"options given: {sorted(kwargs)}")


def _rebuild_stem(model: nn.Module, channels: int, name: str) -> None:
    """Give the model's first Conv2d ``channels`` input channels (its other settings kept, fresh weights)."""
    from torch import nn

    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels == channels:
                return
            if module.groups != 1:
                raise SpecError(f"model.options.name: {name}'s first convolution is grouped; its input "
                                f"channels cannot be changed to {channels}")
            new = nn.Conv2d(channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                            module.dilation, 1, module.bias is not None, module.padding_mode)
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)
            return
    raise SpecError(f"model.options.name: {name} has no Conv2d whose input channels could be set to {channels}")


def torchvision_model(input_shape, num_classes, name: str, **options) -> nn.Module:
    """torchvision's ``name`` with random weights, its head sized to ``num_classes`` and its stem to the
    input's channels."""
    import torchvision.models

    if len(input_shape) != 3:
        raise SpecError(f"model.options.name: torchvision's {name} takes images (C, H, W); this dataset's "
                        f"samples are {tuple(input_shape)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet/inception's note on their future default init
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes,
                                             **_torchvision_kwargs(name, options, tuple(input_shape)))
    _rebuild_stem(model, input_shape[0], name)
    return model


MODELS.add("torchvision", TorchvisionEntry(torchvision_model, stackable=False, libraries=("torchvision.models",)))


# -- the user's own model ------------------------------------------------------------------------------------

def import_factory(path: str, key: str) -> Callable:
    """The callable named by ``module.sub:attr`` (importable from the working directory or installed) or
    ``path/to/file.py:attr`` (relative to the working directory)."""
    module_name, sep, attr = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not sep or not module_name or not attr:
        raise SpecError(f"{key}: must be 'module:function' or 'path/to/file.py:function', got {path!r}")
    try:
        if module_name.endswith(".py"):
            file = Path(os.path.abspath(Path(module_name).expanduser()))
            if not file.is_file():
                raise ImportError(f"no such file {str(file)!r}")
            unique = "warmstart_user_" + hashlib.sha256(str(file).encode()).hexdigest()[:12]
            module = sys.modules.get(unique)
            if module is None:
                spec = importlib.util.spec_from_file_location(unique, file)
                module = importlib.util.module_from_spec(spec)
                sys.modules[unique] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[unique]
                    raise
        else:
            if os.getcwd() not in sys.path:
                sys.path.append(os.getcwd())
            module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - the user's module may raise anything on import
        raise SpecError(f"{key}: cannot import {module_name!r} ({type(e).__name__}: {' '.join(str(e).split())}); "
                        f"it must be importable from the working directory ({os.getcwd()}) or installed") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise SpecError(f"{key}: {module_name!r} has no function {attr!r}")
    return fn


_PYTHON_OPTIONS = ("factory", "stackable")  # the entry's own; every other option goes to the factory


@dataclass(frozen=True)
class PythonEntry(ModelEntry):
    def check(self, options: Mapping[str, Any], key: str) -> None:
        if "factory" not in options:
            raise SpecError(f"{key}: missing option(s) ['factory'] (the model's builder, 'module:function')")
        if not isinstance(options.get("stackable", False), bool):
            raise SpecError(f"{key}.stackable: must be true or false, got {options['stackable']!r}")
        fn = import_factory(options["factory"], f"{key}.factory")
        check_options(fn, {k: v for k, v in options.items() if k not in _PYTHON_OPTIONS}, key, skip=2)


def python_model(input_shape, num_classes, factory: str, stackable: bool = False, **options) -> nn.Module:
    """``factory(input_shape, num_classes, **options)``, which must return an ``nn.Module``."""
    from torch import nn

    model = import_factory(factory, "model.options.factory")(tuple(input_shape), num_classes, **options)
    if not isinstance(model, nn.Module):
        raise SpecError(f"model.options.factory: {factory} returned {type(model).__name__}, not an nn.Module")
    return model


# Stackability is the user's claim (``stackable: true``), read per run by ``checks.stackable``.
MODELS.add("python", PythonEntry(python_model, stackable=lambda options: bool(options.get("stackable", False))))
