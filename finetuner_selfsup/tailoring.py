"""The tailor: name a PyTorch model's layers, and cut the model into an embedding model.

This re-implements the PyTorch tailor of Finetuner 0.4.1 (``finetuner.tailor.pytorch``)
with the same layer names, so that a tutorial's ``layer_name='adaptiveavgpool2d_173'``
keeps pointing at ResNet-50's average pool, and fixes what broke there:

* **Layer names** are unchanged: a forward hook on every module except the root and
  ``nn.Sequential``/``nn.ModuleList`` containers, named ``<class name lower>_<k>`` where
  ``k`` counts hook calls, i.e. forward *completions*, from 1. A module called three times
  gets three names. The trace runs in eval mode (upstream's in training mode), which gives
  the same names unless the model has branches that run only in training (GoogLeNet's and
  Inception v3's auxiliary classifiers); such a model is refused when cut, with what to do.
* **The cut** works at any nesting depth. Upstream replaced, by ``named_modules`` order,
  every module listed after the chosen one and split the dotted name into exactly two
  parts, which crashed on ``embed_model.fc`` (the model ``fit`` returns with a projection
  head) and on any deeper path. Here a module is replaced by ``nn.Identity`` when all of
  its calls *start after the chosen call has finished* (so ancestors, which are still
  running, are kept), and the replacement is put on the right parent by walking the path.
  The cut model is then run once and its output compared with what the layer produced.
* **freeze=[names]** freezes the parameters of the named layers. Upstream zipped the list of
  layer names with ``model.parameters()`` by position, which froze unrelated tensors.
* **Embedding layers** are the layers whose output is one vector per item: ``(batch, D)`` or
  ``(batch, D, 1, ..., 1)`` (a global pool, flattened later by the model's own ``forward``).
  Upstream listed every layer with a tensor output, convolutions included, though cutting at
  one gives feature maps, not embeddings.
* A model with a projection head (what ``fit(..., projection_head=...)`` returns) cut at a
  layer of its backbone gives back the cut backbone alone: the head is dropped, so that the
  SimCLR recipe's second ``fit`` fine-tunes the backbone.

Tracing and cutting work on deep copies in eval mode without gradients: the user's model,
its parameters, ``requires_grad`` flags and BatchNorm statistics are never touched.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import numbers
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .devices import resolve_device
from .heads import EmbeddingModelWithHead, is_model_with_head

logger = logging.getLogger("finetuner_selfsup")

InputSize = Union[Sequence[int], Sequence[Sequence[int]]]
FreezeArg = Union[bool, Sequence[str]]
LayerInfo = Dict[str, Any]

#: batch size of the dummy input, as upstream (a batch of 1 would break BatchNorm1d in train mode)
TRACE_BATCH = 2
#: name of the backbone child in a model with a projection head
EMBED_CHILD = "embed_model"
#: tolerance when the cut model's output is compared with the layer's traced output
_RTOL, _ATOL = 1e-4, 1e-5
_SEED = 0


class LayerNameError(ValueError, KeyError):
    """An unknown or unusable layer name.

    A ``ValueError``; also a ``KeyError`` because upstream raised one for an unknown name.
    """

    def __str__(self) -> str:  # KeyError.__str__ would quote the whole message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- inputs


def _input_sizes(input_size: Optional[InputSize]) -> List[Tuple[int, ...]]:
    """Normalise ``input_size`` to one shape per model input (batch excluded).

    Accepts ``(3, 224, 224)`` (one input) or ``[(3, 224, 224), (10,)]`` (several, as upstream).
    """
    if input_size is None or len(input_size) == 0:
        raise ValueError(
            "Tracing a PyTorch model needs the shape of one input item, without the batch "
            f"dimension, e.g. input_size=(3, 224, 224) for 224x224 RGB images; got "
            f"input_size={input_size!r}"
        )
    if all(_is_int(d) for d in input_size):
        return [tuple(int(d) for d in input_size)]
    sizes = []
    for size in input_size:
        if _is_int(size) or not _is_int_sequence(size):
            raise ValueError(
                f"input_size must be a tuple of ints such as (3, 224, 224), or a list of such "
                f"tuples for a model with several inputs; got {input_size!r}"
            )
        sizes.append(tuple(int(d) for d in size))
    return sizes


def _is_int(value: Any) -> bool:
    """An integer of any kind (``numpy.int64`` too, e.g. from ``array.shape``), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_int_sequence(value: Any) -> bool:
    try:
        return all(_is_int(d) for d in value)
    except TypeError:  # not iterable
        return False


def _torch_dtype(input_dtype: Union[str, torch.dtype]) -> torch.dtype:
    """``'float32'`` -> ``torch.float32``; a clear error for names torch does not know."""
    if isinstance(input_dtype, torch.dtype):
        return input_dtype
    dtype = getattr(torch, str(input_dtype), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"input_dtype={input_dtype!r} is not a torch dtype name such as 'float32'")
    return dtype


def _dummy_inputs(
    sizes: List[Tuple[int, ...]], dtype: torch.dtype, device: torch.device
) -> List[torch.Tensor]:
    """Random inputs of batch :data:`TRACE_BATCH`, drawn from a private generator.

    A private generator keeps the caller's global random stream (and so their run's
    reproducibility) unchanged by a call to the tailor.
    """
    generator = torch.Generator().manual_seed(_SEED)
    return [
        torch.rand(TRACE_BATCH, *size, generator=generator).to(dtype=dtype, device=device)
        for size in sizes
    ]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, no autograd, and restore each ``training`` flag after."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, training in flags:
            module.training = training


# --------------------------------------------------------------------------- tracing


def _shape_of(output: Any) -> Any:
    """Output shape as upstream records it: a list of ints, nested lists for tuples."""
    if isinstance(output, (list, tuple)):
        shapes = [_shape_of(o) for o in output]
        return shapes[0] if len(shapes) == 1 else shapes
    if isinstance(output, torch.Tensor):
        return list(output.shape)
    return []


def _embedding_width(shape: Any) -> Optional[int]:
    """``D`` when ``shape`` is ``[batch, D]`` or ``[batch, D, 1, ..., 1]``, else ``None``."""
    if not isinstance(shape, list) or len(shape) < 2:
        return None
    if not all(isinstance(d, int) for d in shape):
        return None
    if any(d != 1 for d in shape[2:]):
        return None
    return shape[1]


def _own_parameters(module: nn.Module) -> List[nn.Parameter]:
    """The parameters a layer holds itself, not those of its children."""
    return list(module.parameters(recurse=False))


def _is_named_layer(module: nn.Module, root: nn.Module) -> bool:
    """Upstream's rule for which modules get a name: all but the root and the containers."""
    return module is not root and not isinstance(module, (nn.Sequential, nn.ModuleList))


@dataclass
class _Trace:
    """What one forward pass told us about a model.

    ``layers``: the named layer calls, in completion order (what :func:`trace_layers` returns).
    ``calls``: for every module path (containers and root included), its calls as
    ``(start tick, end tick)``; ticks count hook events, so nesting is visible.
    ``ends``: layer name -> end tick of that call. ``outputs``: layer name -> output of that
    call, kept for embedding layers only (vectors, so cheap), for checking the cut.
    """

    layers: List[LayerInfo] = field(default_factory=list)
    calls: Dict[str, List[Tuple[int, int]]] = field(default_factory=dict)
    ends: Dict[str, int] = field(default_factory=dict)
    outputs: Dict[str, torch.Tensor] = field(default_factory=dict)


class _Recorder:
    """Forward pre-hooks and hooks that fill a :class:`_Trace` for one model."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.trace = _Trace()
        self.paths = {id(m): name for name, m in model.named_modules()}
        self._tick = 0
        self._open: Dict[int, List[int]] = {}
        self._handles: List[Any] = []

    def _next_tick(self) -> int:
        self._tick += 1
        return self._tick

    def _on_start(self, module: nn.Module, args: Any) -> None:
        """Pre-hook: note when this call of ``module`` began."""
        self._open.setdefault(id(module), []).append(self._next_tick())

    def _on_end(self, module: nn.Module, args: Any, output: Any) -> None:
        """Hook: close the call, and name it if ``module`` is a named layer."""
        end = self._next_tick()
        start = self._open[id(module)].pop()
        path = self.paths.get(id(module), "")
        self.trace.calls.setdefault(path, []).append((start, end))
        if _is_named_layer(module, self.model):
            self._record_layer(module, path, args, output, end)

    def _record_layer(self, module: nn.Module, path: str, args: Any, output: Any, end: int) -> None:
        """One entry per named call, with the same fields as upstream's ``summary()``."""
        index = len(self.trace.layers)
        name = f"{type(module).__name__.lower()}_{index + 1}"
        shape = _shape_of(output)
        width = _embedding_width(shape)
        own = _own_parameters(module)
        is_embedding = width is not None and type(module).__name__ != type(self.model).__name__
        self.trace.layers.append(
            {
                "name": name,
                "cls_name": type(module).__name__,
                "module_name": path,
                "output_shape": shape,
                "output_shape_display": shape[1:] if shape and isinstance(shape[0], int) else shape,
                "output_features": width if width is not None else _last_dim(shape),
                "input_shape": _shape_of(args),
                "nb_params": sum(p.numel() for p in own),
                "trainable": any(p.requires_grad for p in own),
                "is_embedding_layer": is_embedding,
                "layer_idx": index,
            }
        )
        self.trace.ends[name] = end
        if is_embedding:
            # _shape_of unwraps a one-element tuple/list; the output kept must be its tensor
            tensor = output[0] if isinstance(output, (list, tuple)) else output
            if isinstance(tensor, torch.Tensor):
                self.trace.outputs[name] = tensor.detach().reshape(tensor.shape[0], -1).clone()

    def run(self, inputs: List[torch.Tensor]) -> _Trace:
        """Register the hooks, run the model once in eval mode, remove the hooks."""
        try:
            for module in self.model.modules():
                self._handles.append(module.register_forward_pre_hook(self._on_start))
                self._handles.append(module.register_forward_hook(self._on_end))
            with _eval_mode(self.model):
                self.model(*inputs)
        finally:
            for handle in self._handles:
                handle.remove()
        return self.trace


def _last_dim(shape: Any) -> Optional[int]:
    """Upstream's ``output_features`` (last dimension) for a single-tensor output."""
    if isinstance(shape, list) and shape and all(isinstance(d, int) for d in shape):
        return shape[-1]
    return None


def _trace_in_place(
    model: nn.Module, input_size: Optional[InputSize], input_dtype: str, device: torch.device
) -> Tuple[_Trace, List[torch.Tensor]]:
    """Trace ``model`` itself (the caller owns it); return the trace and the inputs used."""
    inputs = _dummy_inputs(_input_sizes(input_size), _torch_dtype(input_dtype), device)
    return _Recorder(model).run(inputs), inputs


def trace_layers(
    model: nn.Module,
    input_size: Optional[InputSize] = None,
    input_dtype: str = "float32",
    device: Union[str, torch.device] = "cpu",
) -> List[LayerInfo]:
    """List a model's layers with upstream Finetuner's names, in forward-completion order.

    Each entry has ``name`` (e.g. ``'adaptiveavgpool2d_173'``), ``cls_name``, ``module_name``
    (the dotted path in ``named_modules``), ``output_shape`` (with the trace batch of 2, as
    upstream), ``output_shape_display`` (without it), ``output_features`` (the embedding width
    for an embedding layer, else the last dimension), ``input_shape``, ``nb_params`` and
    ``trainable`` (the layer's own parameters), ``is_embedding_layer`` and ``layer_idx``.

    The model is traced on a deep copy, in eval mode, without gradients.

    :param model: the model.
    :param input_size: shape of one input item without the batch, e.g. ``(3, 224, 224)``.
    :param input_dtype: dtype name of the dummy input.
    :param device: where to run the trace.
    """
    target = resolve_device(device)
    sizes = _input_sizes(input_size)  # fail on a missing input_size before copying
    inputs = _dummy_inputs(sizes, _torch_dtype(input_dtype), target)
    replica = copy.deepcopy(model).to(target)
    return _Recorder(replica).run(inputs).layers


# --------------------------------------------------------------------------- choosing the layer


def _display_hint(input_size: Optional[InputSize]) -> str:
    """Where to look up the valid names, in the words of the user's own call."""
    shown = tuple(input_size) if input_size else "..."
    return f"run finetuner.display(model, input_size={shown}) to see them"


def _choose_layer(
    layers: List[LayerInfo], layer_name: Optional[str], input_size: Optional[InputSize]
) -> LayerInfo:
    """The layer to cut at: ``layer_name``, or by default the last embedding layer (as upstream)."""
    embedding = [layer for layer in layers if layer["is_embedding_layer"]]
    valid = [layer["name"] for layer in embedding]
    if not embedding:
        raise LayerNameError(
            "This model has no layer whose output is one vector per item, so it cannot be "
            "cut into an embedding model; " + _display_hint(input_size)
        )
    if layer_name is None:
        return embedding[-1]
    by_name = {layer["name"]: layer for layer in layers}
    if layer_name not in by_name:
        raise LayerNameError(
            f"layer_name={layer_name!r} is not a layer of this model; the embedding layers "
            f"are {valid} ({_display_hint(input_size)})"
        )
    layer = by_name[layer_name]
    if not layer["is_embedding_layer"]:
        raise LayerNameError(
            f"layer {layer_name!r} ({layer['cls_name']} at {layer['module_name']!r}) outputs "
            f"{layer['output_shape_display']} per item, not one vector, so it cannot be an "
            f"embedding layer; choose one of {valid}"
        )
    return layer


# --------------------------------------------------------------------------- cutting


def _is_ancestor_path(path: str, descendant: str) -> bool:
    """Whether module ``path`` contains module ``descendant`` (or is it)."""
    return path == "" or descendant == path or descendant.startswith(path + ".")


def _replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at dotted ``path`` under ``root``, at any depth.

    Containers indexed by position or key (Sequential, ModuleList, ModuleDict) get item
    assignment, everything else ``setattr`` on the direct parent.
    """
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path)
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and child.lstrip("-").isdigit():
        parent[int(child)] = new
    elif isinstance(parent, nn.ModuleDict):
        parent[child] = new
    else:
        setattr(parent, child, new)


def _removable(calls: List[Tuple[int, int]], cut_tick: int) -> bool:
    """A module can go if it ran, and every one of its calls started after the cut."""
    return bool(calls) and all(start > cut_tick for start, _ in calls)


def _straddles(calls: List[Tuple[int, int]], cut_tick: int) -> bool:
    """Called both before and after the cut (so it must stay, and may change the output)."""
    return any(end < cut_tick for _, end in calls) and any(start > cut_tick for start, _ in calls)


@dataclass
class _CutReport:
    """Which module paths (relative to the cut model) were replaced, and which had to stay."""

    replaced: List[str] = field(default_factory=list)
    kept_straddling: List[str] = field(default_factory=list)


def _cut_after(base: nn.Module, prefix: str, trace: _Trace, layer: LayerInfo) -> _CutReport:
    """Replace by ``nn.Identity`` every module of ``base`` that only runs after ``layer``.

    ``prefix`` is the path of ``base`` inside the traced model (``'embed_model.'`` when the
    backbone of a model with a head is cut, else ``''``). Ancestors of the layer never
    qualify, since their call is still running when the layer's call ends.
    """
    cut_tick = trace.ends[layer["name"]]
    report = _CutReport()
    # A module registered under two names (self.fc2 = self.fc) is traced under its first
    # path only; every path of it is replaced, or the alias the forward uses would stay.
    first_path = {id(module): path for path, module in base.named_modules()}
    for path, module in list(base.named_modules(remove_duplicate=False)):
        if path == "" or any(path.startswith(done + ".") for done in report.replaced):
            continue
        full = prefix + path
        calls = trace.calls.get(prefix + first_path[id(module)], [])
        if _is_ancestor_path(full, layer["module_name"]):
            continue
        if _removable(calls, cut_tick):
            _replace_module(base, path, nn.Identity())
            report.replaced.append(path)
        elif _straddles(calls, cut_tick):
            report.kept_straddling.append(path)
    return report


def _select_base(model: nn.Module, layer: LayerInfo) -> Tuple[nn.Module, str]:
    """The module to cut, and its path prefix in the traced model.

    For a model with a projection head whose chosen layer lies in the backbone, that is the
    backbone alone: the head would only be cut away anyway, and returning the bare backbone
    (not ``Sequential(backbone, Identity)``) is what a user fine-tuning it expects.
    """
    module_name = layer["module_name"]
    in_backbone = module_name == EMBED_CHILD or module_name.startswith(EMBED_CHILD + ".")
    if is_model_with_head(model) and in_backbone:
        logger.info(
            "to_embedding_model: layer %r is in the backbone of a model with a projection "
            "head; the projection head was removed and the backbone (embed_model) is returned",
            layer["name"],
        )
        return getattr(model, EMBED_CHILD), EMBED_CHILD + "."
    return model, ""


def _verify_cut(
    base: nn.Module, inputs: List[torch.Tensor], trace: _Trace, layer: LayerInfo, report: _CutReport
) -> int:
    """Run the cut model once; it must output ``(batch, D)``, D the layer's width.

    A shape mismatch or a failing forward means the cut could not be made safely (typically
    a module called both before and after the layer), so it is an error. Equal shapes but
    different values only get a warning.
    """
    name, width = layer["name"], _embedding_width(layer["output_shape"])
    hint = ""
    if report.kept_straddling:
        hint = (
            f" Modules called both before and after it had to be kept: "
            f"{report.kept_straddling}."
        )
    try:
        with _eval_mode(base):
            output = base(*inputs)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"Cutting the model after layer {name!r} ({layer['module_name']!r}) breaks its "
            f"forward pass ({type(err).__name__}: {err}).{hint} Choose another layer."
        ) from err
    if not isinstance(output, torch.Tensor):
        raise ValueError(
            f"Cutting the model after layer {name!r} gives an output of type "
            f"{type(output).__name__}, not a tensor of embeddings.{hint} Choose another layer."
        )
    shape = list(output.shape)
    if shape != [TRACE_BATCH, width]:
        raise ValueError(
            f"Cutting the model after layer {name!r} gives an output of shape {shape[1:]} per "
            f"item, but an embedding model must output one vector of {width} features (the "
            f"layer's output {layer['output_shape_display']}).{hint} Choose a later layer "
            f"(e.g. one that flattens the output) or another layer."
        )
    _check_training_output(base, inputs, name)
    expected = trace.outputs.get(name)
    if expected is not None and not torch.allclose(
        output.float(), expected.float().to(output.device), rtol=_RTOL, atol=_ATOL
    ):
        logger.warning(
            "to_embedding_model: the model cut after %r outputs other values than the layer "
            "did during tracing.%s",
            name,
            hint,
        )
    return width


def _check_training_output(base: nn.Module, inputs: List[torch.Tensor], name: str) -> None:
    """The cut model must output a tensor in training mode too.

    Tracing runs in eval mode, so branches that run only in training (GoogLeNet's and
    Inception v3's auxiliary classifiers, any ``if self.training:``) are never seen and
    stay in the cut model; such a model then returns a tuple while it trains, and the
    loss fails far from the cause. Checked on a copy, so no BatchNorm statistic moves.
    A forward that fails here is left to training to report (the eval-mode check passed).
    """
    replica = copy.deepcopy(base).train()
    cuda = [inputs[0].device] if inputs and inputs[0].device.type == "cuda" else []
    try:
        # dropout and stochastic depth draw in training mode: the caller's random streams
        # (seeded by fit before tailoring) must not move, as with the private dummy inputs
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            output = replica(*inputs)
    except Exception:  # noqa: BLE001 - only the type of a successful output is checked
        return
    if not isinstance(output, torch.Tensor):
        raise ValueError(
            f"Cut after layer {name!r}, the model outputs a tensor in eval mode but a "
            f"{type(output).__name__} in training mode: it has branches that run only in "
            f"training (e.g. the auxiliary classifiers of torchvision's GoogLeNet or "
            f"Inception v3), which the loss cannot use. Build the model without them (e.g. "
            f"aux_logits=False) or remove them before fitting."
        )


# --------------------------------------------------------------------------- freezing


def _check_freeze_arg(freeze: Any) -> None:
    """``freeze`` is a bool or a list/tuple/set of layer names."""
    if isinstance(freeze, bool):
        return
    if isinstance(freeze, (list, tuple, set, frozenset)) and all(isinstance(n, str) for n in freeze):
        return
    raise TypeError(f"freeze must be True/False or a list of layer names, got {freeze!r}")


def _freeze_named_layers(
    base: nn.Module, prefix: str, names: Sequence[str], layers: List[LayerInfo], removed: List[str]
) -> List[str]:
    """Freeze the parameters (recursively) of the modules traced under ``names``.

    Returns the module paths (relative to ``base``) that were frozen. Names whose module was
    cut away (or lies outside ``base``) are reported in a warning and otherwise ignored.
    """
    by_name = {layer["name"]: layer for layer in layers}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise LayerNameError(
            f"freeze names {unknown} are not layers of this model; valid names are "
            f"{list(by_name)}"
        )
    frozen, gone = [], []
    for name in names:
        full = by_name[name]["module_name"]
        path = _relative_path(full, prefix)
        if path is None or any(path == r or path.startswith(r + ".") for r in removed):
            gone.append(name)
            continue
        for param in base.get_submodule(path).parameters():
            param.requires_grad = False
        frozen.append(path)
    if gone:
        logger.warning("to_embedding_model: freeze names %s are not part of the cut model; ignored", gone)
    return frozen


def _relative_path(full: str, prefix: str) -> Optional[str]:
    """``full`` relative to the module at ``prefix`` (``None`` when outside it)."""
    if not prefix:
        return full
    if full == prefix[:-1]:
        return ""
    return full[len(prefix):] if full.startswith(prefix) else None


def _apply_freeze(
    base: nn.Module, prefix: str, freeze: FreezeArg, layers: List[LayerInfo], removed: List[str]
) -> None:
    """``True``: freeze all of ``base``; a list of names: freeze exactly those layers."""
    if freeze is True:
        for param in base.parameters():
            param.requires_grad = False
    elif freeze:
        _freeze_named_layers(base, prefix, list(freeze), layers, removed)


# --------------------------------------------------------------------------- projection head


def _declared_in_features(head: nn.Module) -> Optional[int]:
    """The input width a head declares: its ``in_features``, else its first Linear's."""
    declared = getattr(head, "in_features", None)
    if isinstance(declared, int) and declared > 0:
        return declared
    for module in head.modules():
        if isinstance(module, nn.Linear) and module.in_features > 0:
            return module.in_features
    return None


def _check_head(head: nn.Module, width: int, layer_name: str, device: torch.device) -> None:
    """Fail early, with the fix, when the head cannot take the ``width``-wide embedding."""
    declared = _declared_in_features(head)
    if declared is not None:
        if declared != width:
            raise ValueError(
                f"projection head expects {declared} features but layer {layer_name} outputs "
                f"{width}; use ProjectionHead(in_features={width}, ...)"
            )
        return
    probe = copy.deepcopy(head).to(device)
    try:
        with _eval_mode(probe):
            probe(torch.zeros(TRACE_BATCH, width, device=device))
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"projection head cannot take the output of layer {layer_name} "
            f"({width} features): {type(err).__name__}: {err}; use "
            f"ProjectionHead(in_features={width}, ...)"
        ) from err


# --------------------------------------------------------------------------- public API


def to_embedding_model(
    model: nn.Module,
    layer_name: Optional[str] = None,
    input_size: Optional[InputSize] = None,
    input_dtype: str = "float32",
    freeze: FreezeArg = False,
    projection_head: Optional[nn.Module] = None,
    device: Optional[str] = "cpu",
    **kwargs: Any,
) -> nn.Module:
    """Cut a copy of ``model`` so that it outputs the embedding of ``layer_name``.

    Same signature and meaning as ``finetuner.tailor.to_embedding_model`` of Finetuner 0.4.1
    (extra keyword arguments, e.g. the rest of ``fit``'s, are ignored).

    :param model: the model; it is deep-copied, never modified.
    :param layer_name: the layer whose output is the embedding (a name from
        :func:`trace_layers` / ``finetuner.display``); default: the last embedding layer.
    :param input_size: shape of one input item without the batch, e.g. ``(3, 224, 224)``.
    :param input_dtype: dtype name of the model's input.
    :param freeze: ``True`` freezes the whole embedding model; a list of layer names freezes
        exactly the parameters of those layers (with their children). Parameters only:
        BatchNorm running statistics still follow the training data, as upstream.
    :param projection_head: a module put on top of the embedding model (left trainable); the
        result is then an :class:`EmbeddingModelWithHead`.
    :param device: ``'cpu'``, ``'cuda'`` or ``'cuda:<index>'``; the result is moved there.
    :return: the embedding model, or the embedding model with the projection head.
    """
    if kwargs:
        logger.debug("to_embedding_model: ignoring arguments %s", sorted(kwargs))
    target = resolve_device(device)
    _check_freeze_arg(freeze)
    _input_sizes(input_size)  # fail on a missing input_size before copying a large model
    working = copy.deepcopy(model).to(target)
    trace, inputs = _trace_in_place(working, input_size, input_dtype, target)
    layer = _choose_layer(trace.layers, layer_name, input_size)
    base, prefix = _select_base(working, layer)
    report = _cut_after(base, prefix, trace, layer)
    width = _verify_cut(base, inputs, trace, layer, report)
    _apply_freeze(base, prefix, freeze, trace.layers, report.replaced)
    if projection_head is None:
        return base.to(target)
    _check_head(projection_head, width, layer["name"], target)
    return EmbeddingModelWithHead(base, projection_head).to(target)


def display(
    model: nn.Module, input_size: Optional[InputSize] = None, input_dtype: str = "float32"
) -> None:
    """Print the model's layers (name, output shape, parameters, trainable) as a rich table.

    Embedding layers, the ones ``to_embedding_model(layer_name=...)`` accepts, are marked.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    layers = trace_layers(model, input_size, input_dtype)
    table = Table(box=box.SIMPLE)
    for column in ("name", "module", "output_shape", "nb_params", "trainable", "embedding"):
        table.add_column(column)
    for layer in layers:
        style = _row_style(layer)
        table.add_row(
            layer["name"],
            layer["module_name"],
            str(layer["output_shape_display"]),
            str(layer["nb_params"]),
            str(layer["trainable"]),
            "yes" if layer["is_embedding_layer"] else "",
            style=style,
        )
    Console().print(
        table,
        "[green]Green[/green] layers are trainable, [cyan]cyan[/cyan] ones have no trainable "
        "parameters (or are frozen), [bright_black]gray[/bright_black] ones are Identity "
        "(cut away).\nLayers marked 'embedding' can be passed as "
        "to_embedding_model(..., layer_name=...).",
    )


def _row_style(layer: LayerInfo) -> str:
    """Upstream's colours: gray for Identity, green for trainable, cyan otherwise."""
    if layer["cls_name"] == "Identity":
        return "bright_black"
    return "bright_green" if layer["trainable"] else "cyan"
