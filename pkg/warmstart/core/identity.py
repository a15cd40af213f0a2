"""The pieces of a spec's identity: its canonical JSON, the short hash of it, and the revisions of the
methods it names.

A method (an init strategy, a loss term, an intervention, an optimiser) may be corrected after runs were
made with it; its registry entry then carries a higher ``revision``, which enters the identity of every run
that uses it (``revised``), so results made by the earlier code are never taken for the new one's. The
registries live in ``warmstart.components``, above this layer: they are found here by their kind in the
index that ``core.registry`` fills as each registry is created (``registry_of``). Whatever names runs (the
planner, a training job) imports the components first; naming a run before they are imported is an error,
never a silently different name.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from warmstart.core.registry import Registry, registry_of

# the part of an identity that names a method -> the kind of the registry that holds the method
METHOD_KINDS = {"init": "init strategy", "term": "loss term", "intervention": "intervention", "optimizer": "optimizer"}


def method_registries() -> dict[str, Registry]:
    """The registries whose entries carry a revision, by the identity part that names them."""
    try:
        return {part: registry_of(kind) for part, kind in METHOD_KINDS.items()}
    except LookupError as e:
        raise RuntimeError(f"{e}: import warmstart.components' registries (the planner does) before a run's "
                           "identity is computed, so that it names its methods' revisions") from None


def revision(part: str, name: str) -> int:
    """The revision of the method ``name`` named by the identity part ``part`` ("init", "term", ...)."""
    return method_registries()[part].revision(name)


def revised(part: dict[str, Any], revision: int) -> dict[str, Any]:
    """A method's part of an identity, with its revision when the method has been revised (revision 1
    adds nothing, so runs of methods never revised keep their ids)."""
    return part if revision == 1 else {**part, "revision": revision}


def unrevised(part: Any) -> Any:
    """A method's stored part of an identity without its revision (``revised``'s inverse): the revision is
    the registry's, recomputed with the id, so a spec stored by an earlier revision no longer matches."""
    return {k: v for k, v in part.items() if k != "revision"} if isinstance(part, Mapping) else part


def canonical_json(obj: Any) -> str:
    # repr-exact floats and sorted keys: the same value always gives the same bytes
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def short_hash(obj: Any, length: int = 12) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
