"""Plugin activation: an import hook that grafts this package onto Finetuner 0.4.

Finetuner 0.4.1 has no plugin mechanism, so activation works at the import level:

* **Redirects** -- the upstream modules the tutorial imports from
  (``finetuner.tuner.augmentation``, ``finetuner.tuner.pytorch.losses`` ...) resolve to this
  package's mirror modules (``finetuner_selfsup.tuner.augmentation`` ...). The upstream
  originals are never executed, so e.g. the ``albumentations`` import is never attempted.
* **Post-import patches** -- after ``finetuner``, ``docarray`` and a few of their modules
  are executed, a small function adapts them (``finetuner.fit`` becomes
  :func:`finetuner_selfsup.fit.fit`, docarray gets the tutorial's ``*_blob`` names, the
  callbacks' ``np.Inf`` and docarray's ``np.asfarray`` work on numpy 2, Finetuner's
  ``Evaluator`` uses docarray 0.21's ``evaluate`` API).

This module is imported at interpreter start-up (through ``finetuner_selfsup.pth``), so it
uses the standard library only; the patch functions live elsewhere and are imported only
when the module they patch is imported.
"""
from __future__ import annotations

# Imported at every interpreter start-up: only modules Python has loaded anyway by then
# (importlib.abc/util and typing would add ~25 ms, so the finder and loaders are
# duck-typed and the annotations stay strings).
import importlib
import importlib.machinery
import sys
from types import ModuleType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, Optional, Sequence

ENV_DISABLE = "FINETUNER_SELFSUP_DISABLE"

#: upstream module name -> this package's module that replaces it
REDIRECTS: Dict[str, str] = {
    "finetuner.tailor.pytorch.projection_head": "finetuner_selfsup.tailor.pytorch.projection_head",
    "finetuner.tuner.augmentation": "finetuner_selfsup.tuner.augmentation",
    "finetuner.tuner.pytorch.losses": "finetuner_selfsup.tuner.pytorch.losses",
    "finetuner.tuner.pytorch.miner": "finetuner_selfsup.tuner.pytorch.miner",
    "finetuner.tuner.callback.training_checkpoint": "finetuner_selfsup.tuner.callback.training_checkpoint",
}

#: module name -> "module:function" applied to the module right after it executes
POST_IMPORT_PATCHES: Dict[str, str] = {
    "finetuner": "finetuner_selfsup._plugin:patch_finetuner",
    "finetuner.tailor": "finetuner_selfsup._plugin:patch_tailor",
    "docarray": "finetuner_selfsup.compat.docarray_names:add_blob_aliases",
    "finetuner.tuner.callback.early_stopping": "finetuner_selfsup.compat.numpy2:patch_module",
    "finetuner.tuner.callback.best_model_checkpoint": "finetuner_selfsup.compat.numpy2:patch_module",
    "finetuner.tuner.evaluation": "finetuner_selfsup.compat.evaluator:patch_evaluation_module",
    "finetuner.embedding": "finetuner_selfsup.compat.embedding:patch_embedding_module",
    "docarray.math.evaluation": "finetuner_selfsup.compat.numpy2:patch_module",
}


def _resolve(target: str) -> Callable[[ModuleType], None]:
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


class _AliasLoader:
    """Loads an upstream name as an already-existing module of this package."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._target_spec: Optional[importlib.machinery.ModuleSpec] = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self._target)
        self._target_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the alias spec on our module; give it its own back
        # so that reload/pickling/inspection still see ``finetuner_selfsup.…``.
        module.__spec__ = self._target_spec


class _PatchingLoader:
    """Wraps the real loader of a module and patches the module once it has executed."""

    def __init__(self, wrapped: object, patch: str) -> None:
        self._wrapped = wrapped
        self._patch = patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self._wrapped.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Restore the real loader first: tools that look at __loader__ (inspect,
        # linecache, pkgutil) must see the file loader, not this wrapper.
        module.__loader__ = self._wrapped
        if module.__spec__ is not None:
            module.__spec__.loader = self._wrapped
        self._wrapped.exec_module(module)
        _resolve(self._patch)(module)

    def __getattr__(self, name: str):  # get_source, get_filename, is_package, ...
        return getattr(self._wrapped, name)


class SelfSupFinder:
    """Meta-path finder that applies :data:`REDIRECTS` and :data:`POST_IMPORT_PATCHES`."""

    def find_spec(
        self,
        fullname: str,
        path: Optional[Sequence[str]],
        target: Optional[ModuleType] = None,
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname in REDIRECTS:
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(REDIRECTS[fullname]))
        if fullname in POST_IMPORT_PATCHES:
            spec = self._find_real_spec(fullname, path, target)
            if spec is None or spec.loader is None:
                return spec
            spec.loader = _PatchingLoader(spec.loader, POST_IMPORT_PATCHES[fullname])
            return spec
        return None

    def _find_real_spec(self, fullname, path, target):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


_FINDER: Optional[SelfSupFinder] = None


def is_installed() -> bool:
    """Whether the plugin's import hook is active in this interpreter."""
    return _FINDER is not None and _FINDER in sys.meta_path


def install() -> None:
    """Activate the plugin (idempotent).

    Installs the import hook for modules not imported yet, and applies redirects and
    patches to the ones already imported (e.g. ``import finetuner`` came before
    ``import finetuner_selfsup`` while the automatic activation was switched off).
    """
    global _FINDER
    if _FINDER is None:
        _FINDER = SelfSupFinder()
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    _apply_to_already_imported()


def _apply_to_already_imported() -> None:
    for name, target in REDIRECTS.items():
        parent_name, _, child = name.rpartition(".")
        if parent_name in sys.modules or name in sys.modules:
            module = importlib.import_module(target)
            sys.modules[name] = module
            parent = sys.modules.get(parent_name)
            if parent is not None:
                setattr(parent, child, module)
    for name, patch in POST_IMPORT_PATCHES.items():
        module = sys.modules.get(name)
        if module is not None:
            _resolve(patch)(module)
