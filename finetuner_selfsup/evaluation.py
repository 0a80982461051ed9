"""Pair-retrieval evaluation: embed documents, rank each query's partner, report hit@k.

The tutorial measures retrieval on pairs (Totally Looks Like): each left image is a query,
the right images are the index, and the only relevant result for a query is the right image
with the same file name. This module computes that *exactly* and with bounded memory:

* :func:`embed_documents` runs a model over documents (batched, ``torch.inference_mode``,
  optional DataLoader workers) without touching the documents;
* :func:`rank_of_partner` gives each query the 1-based rank of its partner by cosine
  similarity, computing the similarity matrix in query chunks so that 100,000 x 100,000
  pairs never need a 40 GB matrix; :func:`top_k` lists the nearest items the same way;
* :func:`retrieval_metrics` turns ranks into hit@k, recall@k, ndcg@k, MRR and MAP;
* :func:`evaluate_pairs` chains these for two DocumentArrays paired by a key (the file
  name by default) and :func:`format_table` renders results in the tutorial's table format.

Tie rule (everywhere in this module): items are ordered by descending cosine similarity and
equally similar items by ascending index position, i.e. a *stable* sort by descending
similarity. The rank of item ``j`` for a query is therefore
``1 + #(items strictly more similar) + #(equally similar items at a position < j)``.
Similarities are float32 matrix products, so "equal" means bitwise equal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .devices import DeviceLike, resolve_device
from .documents import describe_document

#: default memory budget of one chunk of the similarity matrix (256 MiB)
DEFAULT_MAX_CHUNK_BYTES = 256 * 2**20
#: norms are clamped to at least this value, so zero vectors do not divide by zero
NORM_EPS = 1e-12
#: float32 counts whole numbers exactly up to 2**24 (see :func:`_exact_row_sums`)
EXACT_SUM_WIDTH = 2**24
#: how many offending keys an error message lists
_MAX_KEYS_LISTED = 10

RanksLike = Union[torch.Tensor, Sequence[int]]


# =====================================================================================
# embedding
# =====================================================================================


def _model_input(doc: Any, preprocess_fn: Optional[Callable[[Any], Any]]) -> torch.Tensor:
    """``preprocess_fn(doc)``, else ``doc.tensor``, else ``doc.content``, as a torch tensor."""
    if preprocess_fn is not None:
        content = preprocess_fn(doc)
    else:
        content = doc.tensor if getattr(doc, "tensor", None) is not None else doc.content
    if content is None:
        raise ValueError(
            f"{describe_document(doc)} has no tensor or content to embed; load the images "
            f"(e.g. doc.load_uri_to_image_tensor()) or pass a preprocess_fn"
        )
    try:
        return content if isinstance(content, torch.Tensor) else torch.as_tensor(content)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"the input of {describe_document(doc)} ({type(content).__name__}) cannot be "
            f"turned into a tensor; pass a preprocess_fn that returns one"
        ) from err


class _InputDataset(Dataset):
    """Dataset item ``i`` = ``(i, model input of docs[i])``; runs in DataLoader workers."""

    def __init__(self, docs: Sequence[Any], preprocess_fn: Optional[Callable[[Any], Any]]):
        self.docs = docs
        self.preprocess_fn = preprocess_fn

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, position: int) -> Tuple[int, torch.Tensor]:
        return position, _model_input(self.docs[position], self.preprocess_fn)


class _StackInputs:
    """Collate ``(position, input)`` items into ``(positions, stacked inputs)``.

    Inputs of different shapes cannot be stacked; the error names both documents instead of
    torch's bare "stack expects each tensor to be equal size".
    """

    def __init__(self, docs: Sequence[Any]):
        self.docs = docs

    def __call__(self, items: List[Tuple[int, torch.Tensor]]) -> Tuple[List[int], torch.Tensor]:
        positions = [position for position, _ in items]
        inputs = [tensor for _, tensor in items]
        first = inputs[0].shape
        for position, tensor in zip(positions[1:], inputs[1:]):
            if tensor.shape != first:
                raise _shape_error(self.docs, positions[0], first, position, tensor.shape)
        return positions, torch.stack(inputs)


def _shape_error(
    docs: Sequence[Any], ref: int, ref_shape: torch.Size, bad: int, bad_shape: torch.Size
) -> ValueError:
    return ValueError(
        f"{describe_document(docs[bad])} (position {bad}) gives a model input of shape "
        f"{tuple(bad_shape)}, but {describe_document(docs[ref])} (position {ref}) gives "
        f"{tuple(ref_shape)}; all inputs must have the same shape (resize the images, e.g. "
        f"with a vision_preprocessor(height, width, phase='validation'))"
    )


def _model_device(model: nn.Module) -> Optional[torch.device]:
    """Device of the model's first parameter (or buffer); ``None`` for a stateless model."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return None


def _progress_bar(enabled: bool) -> Any:
    """A rich progress bar (disabled: nothing is drawn)."""
    from rich.progress import MofNCompleteColumn, Progress

    return Progress(*Progress.get_default_columns(), MofNCompleteColumn(), disable=not enabled)


def embed_documents(
    docs: Sequence[Any],
    model: nn.Module,
    preprocess_fn: Optional[Callable[[Any], Any]] = None,
    batch_size: int = 64,
    device: DeviceLike = "cpu",
    progress: bool = True,
    num_workers: int = 0,
    *,
    write_embeddings: bool = False,
    description: str = "Embedding",
) -> torch.Tensor:
    """Embed documents with ``model``: an ``[N, D]`` float32 CPU tensor, row i = ``docs[i]``.

    The model runs in eval mode under ``torch.inference_mode``; afterwards every module's
    train/eval mode and the model's device are restored, so evaluating in the middle of
    training has no side effects. The documents are not modified either (unless
    ``write_embeddings=True``), unlike Finetuner's ``embed``, which writes ``doc.embedding``.

    :param docs: a DocumentArray (or any sequence of documents).
    :param model: the embedding model; its output is flattened to ``[batch, D]``.
    :param preprocess_fn: ``doc -> input``; without it ``doc.tensor`` (else ``doc.content``)
        is the input. Typically ``vision_preprocessor(h, w, phase='validation')``.
    :param batch_size: documents per forward pass.
    :param device: where the model runs (``'cpu'``, ``'cuda'``, ...).
    :param progress: show a rich progress bar.
    :param num_workers: DataLoader worker processes for ``preprocess_fn`` (decoding images);
        ``preprocess_fn`` must then be picklable.
    :param write_embeddings: also store each row as ``doc.embedding`` (numpy).
    :param description: label of the progress bar.
    :raises ValueError: a document has no input, or inputs differ in shape (names the doc).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    target = resolve_device(device)
    if len(docs) == 0:
        return torch.empty(0, 0, dtype=torch.float32)

    loader = DataLoader(
        _InputDataset(docs, preprocess_fn),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_StackInputs(docs),
        pin_memory=target.type == "cuda",
    )
    rows = _run_model(model, loader, docs, target, progress, description)
    embeddings = torch.cat(rows)  # outside inference mode: an ordinary tensor
    if write_embeddings:
        for doc, row in zip(docs, embeddings):
            doc.embedding = row.numpy().copy()
    return embeddings


def _run_model(
    model: nn.Module,
    loader: DataLoader,
    docs: Sequence[Any],
    device: torch.device,
    progress: bool,
    description: str,
) -> List[torch.Tensor]:
    """Forward all batches in eval mode; restore the modules' modes and device afterwards."""
    modes = {module: module.training for module in model.modules()}
    original_device = _model_device(model)
    moved = original_device is not None and original_device != device
    rows: List[torch.Tensor] = []
    try:
        if moved:
            model.to(device)
        model.eval()
        with _progress_bar(progress) as bar, torch.inference_mode():
            task = bar.add_task(description, total=len(docs))
            ref: Optional[Tuple[int, torch.Size]] = None
            for positions, inputs in loader:
                if ref is None:
                    ref = (positions[0], inputs.shape[1:])
                elif inputs.shape[1:] != ref[1]:
                    raise _shape_error(docs, ref[0], ref[1], positions[0], inputs.shape[1:])
                rows.append(_forward(model, inputs, device))
                bar.advance(task, len(positions))
    finally:
        for module, training in modes.items():
            module.train(training)
        if moved:
            model.to(original_device)
    return rows


def _forward(model: nn.Module, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One batch through the model -> ``[batch, D]`` float32 on the CPU."""
    output = model(inputs.to(device, non_blocking=True))
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"the model returned {type(output).__name__}; an embedding model must return "
            f"a tensor of shape [batch, D]"
        )
    return output.reshape(output.shape[0], -1).to("cpu", torch.float32)


# =====================================================================================
# exact retrieval with bounded memory
# =====================================================================================


def _check_embeddings(query_emb: torch.Tensor, index_emb: torch.Tensor) -> None:
    """Both 2-d, same width, finite, non-empty index."""
    for name, emb in (("query_emb", query_emb), ("index_emb", index_emb)):
        if not isinstance(emb, torch.Tensor) or emb.dim() != 2:
            shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
            raise ValueError(f"{name} must be a 2-d tensor [n, D], got {shape}")
        if not bool(torch.isfinite(emb).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
    if query_emb.shape[1] != index_emb.shape[1]:
        raise ValueError(
            f"query and index embeddings differ in width: {query_emb.shape[1]} vs "
            f"{index_emb.shape[1]}"
        )
    if index_emb.shape[0] == 0:
        raise ValueError("the index is empty")


def _normalised(emb: torch.Tensor, device: torch.device) -> torch.Tensor:
    """float32 rows scaled to unit L2 norm (norm clamped to ``NORM_EPS``: zero rows stay 0)."""
    emb = emb.to(device=device, dtype=torch.float32)
    return emb / emb.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)


def chunk_rows(n_index: int, chunk_size: Optional[int], max_chunk_bytes: int) -> int:
    """Query rows per chunk: ``chunk_size`` if given, else ``max(1, bytes // (4 n_index))``."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    if max_chunk_bytes < 1:
        raise ValueError(f"max_chunk_bytes must be >= 1, got {max_chunk_bytes}")
    return max(1, int(max_chunk_bytes) // (4 * max(1, n_index)))


def _prepare(
    query_emb: torch.Tensor,
    index_emb: torch.Tensor,
    chunk_size: Optional[int],
    max_chunk_bytes: int,
    device: DeviceLike,
) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Checked, normalised ``queries``, transposed ``index`` and the rows per chunk."""
    _check_embeddings(query_emb, index_emb)
    target = resolve_device(device) if device is not None else index_emb.device
    queries = _normalised(query_emb, target)
    index_t = _normalised(index_emb, target).t()
    return queries, index_t, chunk_rows(index_t.shape[1], chunk_size, max_chunk_bytes)


def rank_of_partner(
    query_emb: torch.Tensor,
    index_emb: torch.Tensor,
    partner_index: RanksLike,
    chunk_size: Optional[int] = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    device: DeviceLike = None,
) -> torch.Tensor:
    """For each query ``i``, the 1-based rank of index item ``partner_index[i]`` (cosine).

    Exact, with bounded memory: similarities are computed for ``c`` queries at a time, with
    ``c = max(1, max_chunk_bytes // (4 * n_index))`` (or ``c = chunk_size`` if given), so at
    most ``max_chunk_bytes`` of similarity matrix exists at a time.

    Memory bound: about ``max_chunk_bytes + O(n_query + n_index)`` bytes besides the
    embeddings and one normalised float32 copy of them: the counting works in place on
    the chunk (no boolean masks or second ``[c, n_index]`` tensor). 100,000 x 100,000
    pairs thus need ~256 MiB of working memory with the default, not a 40 GB matrix.

    Tie rule: ``rank = 1 + #(index items strictly more similar) + #(equally similar items
    at a smaller index position)``, i.e. the position in a stable sort by descending
    similarity (consistent with :func:`top_k`).

    :param query_emb: ``[n_query, D]`` query embeddings (need not be normalised).
    :param index_emb: ``[n_index, D]`` index embeddings.
    :param partner_index: ``[n_query]`` position in the index of each query's partner.
    :param chunk_size: query rows per chunk; overrides ``max_chunk_bytes`` when given.
    :param max_chunk_bytes: byte budget of one similarity chunk.
    :param device: where to compute (default: the device of ``index_emb``).
    :return: ``[n_query]`` int64 ranks in ``1..n_index`` on the CPU.
    """
    partner = torch.as_tensor(partner_index, dtype=torch.long).flatten()
    if partner.shape[0] != query_emb.shape[0]:
        raise ValueError(
            f"partner_index has {partner.shape[0]} entries for {query_emb.shape[0]} queries"
        )
    n_index = index_emb.shape[0]
    if partner.numel() and (int(partner.min()) < 0 or int(partner.max()) >= n_index):
        raise ValueError(f"partner_index values must lie in 0..{n_index - 1}")

    queries, index_t, rows = _prepare(query_emb, index_emb, chunk_size, max_chunk_bytes, device)
    partner = partner.to(queries.device)
    ranks = torch.empty(partner.shape[0], dtype=torch.long)
    for start in range(0, queries.shape[0], rows):
        sims = queries[start : start + rows] @ index_t
        ranks[start : start + rows] = _ranks_in_chunk(sims, partner[start : start + rows])
        del sims  # release this chunk before the next one is computed
    return ranks


def _exact_row_sums(values: torch.Tensor) -> torch.Tensor:
    """Row sums of a float32 matrix of small integers (here -1, 0, 1), exactly, as int64.

    float32 represents every integer up to 2**24 exactly, so summing column blocks of at
    most that width cannot round, whatever the order of the additions.
    """
    sums = torch.zeros(values.shape[0], dtype=torch.long, device=values.device)
    for start in range(0, values.shape[1], EXACT_SUM_WIDTH):
        sums += values[:, start : start + EXACT_SUM_WIDTH].sum(1).round().long()
    return sums


def _count_relative_to(
    sims: torch.Tensor, threshold: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per row, how many entries are above and how many equal ``threshold[row]``.

    Works in place, without a second ``[c, n_index]`` tensor (a boolean mask would be a
    quarter of the chunk, and summing it makes an int64 copy twice the chunk's size):
    ``sims`` becomes ``sign(sims - threshold)``, whose row sum is ``above - below``, and
    then its absolute value (1 = different, 0 = equal), whose row sum is ``above + below``.
    ``sims`` is left holding 0 exactly where an entry equals its row's threshold (IEEE
    subtraction of two different finite floats is never 0).
    """
    sims.sub_(threshold).sign_()
    above_minus_below = _exact_row_sums(sims)
    sims.abs_()
    different = _exact_row_sums(sims)
    return (above_minus_below + different) // 2, sims.shape[1] - different


def _zeros_before(row: torch.Tensor, stop: int) -> int:
    """How many of ``row[:stop]`` are 0 (``row`` holds only 0 and 1)."""
    return stop - int(_exact_row_sums(row[None, :stop])[0])


def _ranks_in_chunk(sims: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """Ranks of ``partner[r]`` in row ``r`` of ``sims`` under the tie rule (overwrites ``sims``)."""
    score = sims.gather(1, partner[:, None])
    better, equal = _count_relative_to(sims, score)  # equal includes the partner itself
    ties_before = torch.zeros_like(better)
    # Ties are rare in real embeddings: handle the affected rows one by one (O(n_index)
    # each, so the memory bound holds even if every row is tied).
    for row in (equal > 1).nonzero().flatten().tolist():
        ties_before[row] = _zeros_before(sims[row], int(partner[row]))
    return (1 + better + ties_before).cpu()


class TopK(NamedTuple):
    """Nearest index items per query, best first: positions and cosine similarities."""

    indices: torch.Tensor
    scores: torch.Tensor


def top_k(
    query_emb: torch.Tensor,
    index_emb: torch.Tensor,
    k: int,
    chunk_size: Optional[int] = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    device: DeviceLike = None,
) -> TopK:
    """The ``min(k, n_index)`` most similar index items of each query (cosine), best first.

    Chunked like :func:`rank_of_partner` (same memory bound plus ``O(n_query * k)`` for the
    result and ``torch.topk``) and with the same tie rule: equally similar items come in
    ascending index position, so ``indices[i, j]`` is the item whose rank (as given by
    :func:`rank_of_partner`) for query ``i`` is ``j + 1``.

    :return: :class:`TopK` of ``indices`` (int64) and ``scores`` (float32), both
        ``[n_query, min(k, n_index)]`` on the CPU.
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queries, index_t, rows = _prepare(query_emb, index_emb, chunk_size, max_chunk_bytes, device)
    n_query, n_index = queries.shape[0], index_t.shape[1]
    kk = min(int(k), n_index)
    indices = torch.empty(n_query, kk, dtype=torch.long)
    scores = torch.empty(n_query, kk, dtype=torch.float32)
    for start in range(0, n_query, rows):
        sims = queries[start : start + rows] @ index_t
        indices[start : start + rows], scores[start : start + rows] = _top_k_in_chunk(sims, kk)
        del sims  # release this chunk before the next one is computed
    return TopK(indices, scores)


def _top_k_in_chunk(sims: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stable top-k of each row: by descending similarity, ties by ascending position.

    Overwrites ``sims``.
    """
    values, positions = torch.topk(sims, k, dim=1)
    kth = values[:, -1:].clone()
    above, equal = _count_relative_to(sims, kth)  # sims: 0 where equal to the k-th value
    # torch.topk may pick any of several items tied with the k-th value; where there are
    # more of those than places left, keep the ones with the smallest positions. Items
    # above the k-th value (fewer than k) are all among torch.topk's picks.
    for row in (above + equal > k).nonzero().flatten().tolist():
        keep = values[row] > kth[row]
        tied = (sims[row] == 0).nonzero().flatten()[: k - int(keep.sum())]
        positions[row] = torch.cat([positions[row][keep], tied])
        values[row] = torch.cat([values[row][keep], kth[row].expand(tied.numel())])
    return _order_stably(positions, values)


def _order_stably(
    positions: torch.Tensor, values: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by descending value, equal values by ascending position."""
    positions, by_position = positions.sort(dim=1)
    values = values.gather(1, by_position)
    values, by_value = values.sort(dim=1, descending=True, stable=True)
    return positions.gather(1, by_value).cpu(), values.cpu()


# =====================================================================================
# metrics
# =====================================================================================


def _as_ranks(ranks: RanksLike) -> torch.Tensor:
    """Validated float64 1-d ranks (>= 1)."""
    values = torch.as_tensor(ranks).flatten()
    if values.numel() == 0:
        raise ValueError("no ranks given: at least one query is needed")
    if values.is_floating_point() and not bool((values == values.round()).all()):
        raise ValueError("ranks must be whole numbers")
    values = values.to(torch.float64)
    if float(values.min()) < 1:
        raise ValueError(f"ranks are 1-based; got a rank of {float(values.min()):g}")
    return values


def _check_ks(ks: Sequence[int]) -> Tuple[int, ...]:
    checked = tuple(int(k) for k in ks)
    if any(k < 1 for k in checked):
        raise ValueError(f"every k must be >= 1, got {tuple(ks)}")
    return checked


def retrieval_metrics(ranks: RanksLike, ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """Retrieval metrics for queries with exactly one relevant index item each.

    With a single relevant item several textbook metrics coincide, and that is stated
    rather than hidden:

    * ``hit@k``: share of queries whose item has rank <= k (the tutorial's number);
    * ``recall@k``: the same value as ``hit@k`` (the one item is found or not);
    * ``ndcg@k``: mean of ``1 / log2(rank + 1)`` if rank <= k, else 0 (ideal DCG is 1);
    * ``mrr``: mean of ``1 / rank``;
    * ``map``: the same value as ``mrr`` (average precision of one item is ``1 / rank``).

    ``k`` may exceed the index size (every rank is then <= k, so hit@k = 1).

    :param ranks: 1-based rank of each query's relevant item (:func:`rank_of_partner`).
    :param ks: cut-offs.
    :return: ``{'hit@1': ..., 'recall@1': ..., 'ndcg@1': ..., ..., 'mrr': ..., 'map': ...}``
        with Python floats.
    """
    values = _as_ranks(ranks)
    reciprocal = 1.0 / values
    gain = 1.0 / torch.log2(values + 1.0)
    metrics: Dict[str, float] = {}
    for k in _check_ks(ks):
        found = values <= k
        hit = float(found.to(torch.float64).mean())
        metrics[f"hit@{k}"] = hit
        metrics[f"recall@{k}"] = hit
        metrics[f"ndcg@{k}"] = float(torch.where(found, gain, torch.zeros_like(gain)).mean())
    metrics["mrr"] = float(reciprocal.mean())
    metrics["map"] = metrics["mrr"]
    return metrics


# =====================================================================================
# pairs of DocumentArrays
# =====================================================================================


def document_key(doc: Any) -> str:
    """The file name of ``doc.uri`` (``left/00001.jpg`` -> ``00001.jpg``), else ``doc.id``."""
    uri = getattr(doc, "uri", None)
    return Path(uri).name if uri else str(doc.id)


def _listed(keys: Sequence[Any]) -> str:
    """Up to ``_MAX_KEYS_LISTED`` keys, and how many more there are."""
    shown = ", ".join(repr(key) for key in keys[:_MAX_KEYS_LISTED])
    more = len(keys) - _MAX_KEYS_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _duplicates(keys: Sequence[Any]) -> List[Any]:
    """Keys occurring more than once, in order of first repetition."""
    seen: set = set()
    repeated: Dict[Any, None] = {}
    for key in keys:
        if key in seen:
            repeated[key] = None
        seen.add(key)
    return list(repeated)


def pair_keys_to_partner(query_keys: Sequence[Any], index_keys: Sequence[Any]) -> torch.Tensor:
    """Position in ``index_keys`` of each query's key: the ``partner_index`` of the queries.

    :raises ValueError: a key repeats on either side (the pairing would be ambiguous) or a
        query has no partner; the message lists up to 10 offending keys.
    """
    for side, keys in (("query", query_keys), ("index", index_keys)):
        repeated = _duplicates(keys)
        if repeated:
            raise ValueError(
                f"{len(repeated)} {side} key(s) occur more than once, so pairs are "
                f"ambiguous: {_listed(repeated)}"
            )
    position = {key: i for i, key in enumerate(index_keys)}
    missing = [key for key in query_keys if key not in position]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(query_keys)} queries have no index item with the same "
            f"key: {_listed(missing)}"
        )
    return torch.tensor([position[key] for key in query_keys], dtype=torch.long)


@dataclass
class PairRetrievalResult:
    """Result of :func:`evaluate_pairs`.

    :ivar metrics: query -> index metrics (:func:`retrieval_metrics`).
    :ivar ranks: ``[num_queries]`` rank of each query's partner.
    :ivar ks: the cut-offs used.
    :ivar num_queries: number of queries.
    :ivar num_index: number of index items.
    :ivar reverse_metrics: index -> query metrics (only with ``both_directions``).
    :ivar reverse_ranks: ``[num_index]`` ranks of the reverse direction.
    :ivar mean_metrics: the mean of both directions, metric by metric.
    """

    metrics: Dict[str, float]
    ranks: torch.Tensor
    ks: Tuple[int, ...]
    num_queries: int
    num_index: int
    reverse_metrics: Optional[Dict[str, float]] = None
    reverse_ranks: Optional[torch.Tensor] = None
    mean_metrics: Optional[Dict[str, float]] = None


def evaluate_pairs(
    model: nn.Module,
    queries: Sequence[Any],
    index: Sequence[Any],
    preprocess_fn: Optional[Callable[[Any], Any]] = None,
    ks: Sequence[int] = (1, 5, 10),
    key: Callable[[Any], Any] = document_key,
    batch_size: int = 64,
    device: DeviceLike = "cpu",
    both_directions: bool = False,
    progress: bool = True,
    *,
    num_workers: int = 0,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> PairRetrievalResult:
    """Pair retrieval as in the tutorial: each query's only relevant item is its partner.

    Queries (e.g. the left images) and index (the right images) are paired by ``key``
    (default: the file name of ``doc.uri``, else ``doc.id``); both are embedded with
    :func:`embed_documents` and the partner of each query is ranked among all index items
    by cosine similarity (:func:`rank_of_partner`; exact, bounded memory, stable ties).

    :param both_directions: also rank each index item's partner among the queries
        (right -> left); then every index item needs a partner among the queries too.
    :param ks: cut-offs for hit@k, recall@k and ndcg@k.
    :raises ValueError: empty inputs, duplicate keys or a query without partner.
    """
    if len(queries) == 0 or len(index) == 0:
        raise ValueError(f"need queries and index items, got {len(queries)} and {len(index)}")
    ks = _check_ks(ks)
    query_keys = [key(doc) for doc in queries]
    index_keys = [key(doc) for doc in index]
    partner = pair_keys_to_partner(query_keys, index_keys)
    reverse_partner = pair_keys_to_partner(index_keys, query_keys) if both_directions else None

    def embed(docs: Sequence[Any], what: str) -> torch.Tensor:
        return embed_documents(
            docs, model, preprocess_fn, batch_size, device, progress, num_workers,
            description=f"Embedding {what}",
        )

    query_emb = embed(queries, "queries")
    index_emb = embed(index, "index")
    ranks = rank_of_partner(query_emb, index_emb, partner, max_chunk_bytes=max_chunk_bytes)
    result = PairRetrievalResult(
        metrics=retrieval_metrics(ranks, ks),
        ranks=ranks,
        ks=ks,
        num_queries=len(queries),
        num_index=len(index),
    )
    if reverse_partner is not None:
        result.reverse_ranks = rank_of_partner(
            index_emb, query_emb, reverse_partner, max_chunk_bytes=max_chunk_bytes
        )
        result.reverse_metrics = retrieval_metrics(result.reverse_ranks, ks)
        result.mean_metrics = {
            name: (value + result.reverse_metrics[name]) / 2
            for name, value in result.metrics.items()
        }
    return result


# =====================================================================================
# reporting
# =====================================================================================


def _cell(value: Optional[float], decimals: int) -> str:
    """A metric value with fixed decimals; missing (``None`` or NaN) -> ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.{decimals}f}"


def format_table(
    columns: Mapping[str, Mapping[str, Optional[float]]],
    ks: Sequence[int] = (1, 5, 10),
    metric: str = "hit",
    decimals: int = 3,
) -> str:
    """A Markdown table of ``metric@k`` rows and one column per model, as in the tutorial.

    ``columns`` maps a column title (e.g. ``'pre-trained'``) to a metrics dict (e.g.
    ``result.metrics``); a metric absent from a column renders as ``-``. Cells are padded
    to the column width so the source reads as a table too::

        | hit@k  | pre-trained | fine-tuned |
        |--------|-------------|------------|
        | hit@1  | 0.068       | 0.122      |
    """
    header = [f"{metric}@k"] + list(columns)
    body = [
        [f"{metric}@{k}"]
        + [_cell(values.get(f"{metric}@{k}"), decimals) for values in columns.values()]
        for k in _check_ks(ks)
    ]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "|" + "|".join(f" {cell.ljust(width)} " for cell, width in zip(cells, widths)) + "|"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(header), rule] + [line(row) for row in body])
