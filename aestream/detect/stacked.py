"""Many sensors' own models scored in one call: their weights stacked, their windows padded to one batch.

With ``baselines.mode = "finetune"`` every sensor has its own copy of the shared model. Scoring a step's windows
one model at a time costs a model call, a preprocessing pass and a copy per sensor (~0.1 ms each: most of a
step of batched messages from a few hundred sensors). Models of one architecture (family, hyperparameters,
input smoothing and detrended channels) are instead stacked once into a :class:`ModelBank` and run over
``(sensors, windows, W, C)``; each sensor's windows are preprocessed by its own scales in the same pass. The MLP
families (linear layers and activations over the flattened window) run as one batched matrix product a layer
(``torch.baddbmm``): ~0.4 ms for 50 sensors' models with a window each, against ~0.9 ms under
:func:`torch.func.vmap`, which runs the others (conv). The errors are those of :meth:`Scorer.raw_channel_errors`
per sensor, to float rounding.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from aestream.detect.features import standardise
from aestream.detect.scoring import Scorer, reconstruction_errors
from aestream.models.base import ACTIVATIONS, mlp_layers

__all__ = ["ModelBank", "architecture", "channel_errors_many", "channel_errors_of"]


def architecture(scorer: Scorer) -> Hashable:
    """What must be equal for two scorers' models to run stacked (worked out once per scorer: its model's
    hyperparameters and preprocessing do not change)."""
    key = _ARCHITECTURES.get(scorer)
    if key is None:
        m, p = scorer.model, scorer.preprocessor
        key = _ARCHITECTURES[scorer] = (type(m), tuple(sorted(m.hyperparameters().items())), p.smooth,
                                        tuple(p.detrend.tolist()), str(scorer.device))
    return key


SPREAD_SHARE = 0.4  # see ModelBank.errors_at (measured: 35 of 50 models gathered 0.59 ms, all 50 run 0.41 ms)
SMALL_BANK_BYTES = 4 << 20
SMALL_BANK_WINDOWS = 256
"""An MLP bank whose weights are at most ``SMALL_BANK_BYTES`` runs whole when it is asked for more than one model
and its padded batch (its models × the most windows one of them has) stays within this many windows: the weights
stay in the cache, and gathering the models asked for cost more than running the others (50 vanilla models of
32 × 4 readings, 3.4 MB, a window a model: 11 or 15 sensors' 0.36 ms run whole, 0.44–0.47 ms gathered; 5 sensors'
the same). A step of batched messages from a few sensors (1,000 windows each) is gathered: run whole, it cost
~100 ms instead of ~10."""
_ARCHITECTURES: weakref.WeakKeyDictionary[Scorer, Hashable] = weakref.WeakKeyDictionary()


class ModelBank:
    """The stacked weights and preprocessing constants of scorers of one :func:`architecture`.

    Built once for a set of scorers, and grown by :meth:`extend` when another is asked for (a sensor's fine-tune
    done): the held rows are copied once next to the new one's instead of every model being stacked again (adding
    the 50th vanilla model took 2.4 ms, building the bank of 50 again 5.3 ms; conv 0.4 and 2.5 ms)."""

    def __init__(self, scorers: Sequence[Scorer], window_size: int) -> None:
        self.scorers: list[Scorer] = []
        self.index: dict[int, int] = {}
        self.window_size = window_size
        first = scorers[0]
        self._model = first.model
        self._detrend = first.preprocessor._plan(window_size).detrend  # the same for one architecture
        self._device = first.device
        self._smooth = first.preprocessor.smooth
        self._forward = vmap(self._call)
        # the MLP families: per layer, the transposed weights (S, in, out) and biases (S, 1, out), or an activation;
        # the others (vmap): the stacked parameters and buffers
        self._layers: list[tuple[torch.Tensor, torch.Tensor] | Callable[[torch.Tensor], torch.Tensor]] | None = None
        self._mlp = mlp_layers(first.model) is not None
        self._bytes = 0  # the MLP layers' stacked weights
        self._weights: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] = ({}, {})
        self._mean = self._mean_hi = self._mean_lo = self._scale = np.empty(0)
        self.extend(scorers)

    def extend(self, scorers: Sequence[Scorer]) -> None:
        """Stack ``scorers`` (of this bank's architecture) after the held ones; those already held are skipped."""
        new = list({id(s): s for s in scorers if id(s) not in self.index}.values())
        if not new:
            return
        first = not self.scorers

        def grow(held: torch.Tensor, added: torch.Tensor) -> torch.Tensor:
            return added if first else torch.cat([held, added])

        def grow_rows(held: np.ndarray, rows: list[np.ndarray]) -> np.ndarray:
            added = np.stack(rows)[:, None, :]
            return added if first else np.concatenate([held, added])

        plans = [s.preprocessor._plan(self.window_size) for s in new]
        self._mean = grow_rows(self._mean, [p.mean for p in plans])
        self._mean_hi = grow_rows(self._mean_hi, [p.mean_hi for p in plans])
        self._mean_lo = grow_rows(self._mean_lo, [p.mean_lo for p in plans])
        self._scale = grow_rows(self._scale, [p.scale for p in plans])
        with torch.no_grad():
            if self._mlp:
                per_model = [mlp_layers(s.model) for s in new]
                if any(layers is None for layers in per_model):
                    raise ValueError("a scorer of another architecture than the bank's")
                layers = [
                    (torch.stack([ls[i].weight.detach().t() for ls in per_model]).contiguous(),  # type: ignore
                     torch.stack([ls[i].bias.detach() for ls in per_model])[:, None, :])  # type: ignore
                    if isinstance(layer, nn.Linear) else ACTIVATIONS[type(layer)]
                    for i, layer in enumerate(per_model[0])]  # type: ignore[arg-type]
                self._layers = layers if first else [
                    (grow(held[0], added[0]), grow(held[1], added[1]))  # type: ignore[index]
                    if isinstance(added, tuple) else added for held, added in zip(self._layers, layers)]  # type: ignore[arg-type]
                self._bytes = sum(w.nbytes + b.nbytes for w, b in (x for x in self._layers if isinstance(x, tuple)))
            else:
                params, buffers = stack_module_state([s.model for s in new])
                self._weights = tuple(  # type: ignore[assignment]
                    {k: grow(held[k], v.detach()) if held else v.detach() for k, v in added.items()}
                    for held, added in zip(self._weights, (params, buffers)))
        for s in new:
            self.index[id(s)] = len(self.scorers)
            self.scorers.append(s)

    def holds(self, scorers: Sequence[Scorer]) -> bool:
        return all(id(s) in self.index for s in scorers)

    def _call(self, weights: tuple[dict[str, Any], dict[str, Any]], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._model, weights, (x,))  # type: ignore[no-any-return]

    def channel_errors(self, scorers: Sequence[Scorer], windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Raw channel errors ``(n_i, C)`` of each scorer's raw windows ``(n_i, W, C)`` (all held by this bank)."""
        sizes = [len(w) for w in windows]
        rows = np.repeat(np.fromiter((self.index[id(s)] for s in scorers), np.intp, len(scorers)), sizes)
        return np.split(self.errors_at(rows, np.concatenate(windows)), np.cumsum(sizes)[:-1])

    def errors_at(self, rows: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """Raw channel errors ``(B, C)`` of raw windows ``(B, W, C)``, window ``i`` by the model in bank row
        ``rows[i]``. A step of live single readings closes a window or two of many sensors: each window's place in
        the padded batch ``(models, windows a model, W, C)`` (its model's row, its rank among that model's windows)
        is worked out for all at once, not with an array a model (a call for 25 of 50 sensors' models, a window
        each: 0.62 → 0.53 ms; all 50: 0.82 → 0.59 ms; medians of twelve rounds, interleaved)."""
        b = len(rows)
        if b == 0:
            return np.zeros((0, windows.shape[2]))
        if len(set(rows.tolist())) == b:  # a window a model (most live steps): no ranks to work out
            used, rank, n = np.sort(rows), np.zeros(b, dtype=np.intp), 1
        else:
            order = np.argsort(rows, kind="stable")
            ranked = rows[order]
            first = np.empty(b, dtype=bool)
            first[0] = True
            np.not_equal(ranked[1:], ranked[:-1], out=first[1:])
            starts = np.flatnonzero(first)  # each model's first window in ``order``
            counts = np.diff(starts, append=b)
            rank = np.empty(b, dtype=np.intp)
            rank[order] = np.arange(b) - np.repeat(starts, counts)
            used, n = ranked[starts], int(counts.max())  # the models asked for, in row order
        # every model runs (the others on padding) when all are asked for or, for the MLP families, 40 % of the
        # bank or more (SPREAD_SHARE), or more than one of a small bank on few windows; else the asked-for models'
        # weights are gathered
        small = self._bytes <= SMALL_BANK_BYTES and n * len(self.scorers) <= SMALL_BANK_WINDOWS
        every = len(used) == len(self.scorers) or (self._layers is not None and (
            len(used) >= SPREAD_SHARE * len(self.scorers) or (len(used) > 1 and small)))
        slot = rows if every else np.searchsorted(used, rows)
        picked = None if every else used
        size, c = windows.shape[1:]
        raw = np.zeros((len(self.scorers) if every else len(used), n, size, c),
                       dtype=np.float32 if windows.dtype == np.float32 else np.float64)
        raw[slot, rank] = windows
        x = self._array(raw.reshape(len(raw), n, size * c), picked, c)
        at = None if picked is None else torch.from_numpy(picked)
        errors = reconstruction_errors(lambda h: self._reconstruct(h, at), x, self._device)
        return errors[slot, rank]  # type: ignore[no-any-return]

    def _reconstruct(self, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """The reconstructions ``(S, n, W, C)`` of each stacked model's (``rows``; None: all) preprocessed windows."""
        if self._layers is None:
            params = self._weights if rows is None else ({k: v[rows] for k, v in self._weights[0].items()},
                                                         {k: v[rows] for k, v in self._weights[1].items()})
            return self._forward(params, x)  # type: ignore[no-any-return]
        s, n = x.shape[0], x.shape[1]
        h = x.reshape(s, n, -1)
        for layer in self._layers:
            if isinstance(layer, tuple):
                w, b = layer if rows is None else (layer[0][rows], layer[1][rows])
                h = torch.baddbmm(b, h, w)
            else:
                h = layer(h)
        return h.view(x.shape)

    def _array(self, raw: np.ndarray, rows: np.ndarray | None, c: int) -> np.ndarray:
        """:func:`standardise` of each sensor's rows ``(S, n, W·C)`` by its own constants (``rows``: whose)."""
        def pick(a: np.ndarray) -> np.ndarray:
            return a if rows is None else a[rows]

        centre = (pick(self._mean_hi), pick(self._mean_lo)) if raw.dtype == np.float32 else pick(self._mean)
        return standardise(raw, centre, (pick(self._scale),), self._smooth, c, self._detrend)


def channel_errors_many(scorers: Sequence[Scorer], windows: Sequence[np.ndarray], banks: dict[Hashable, ModelBank],
                        every: Callable[[], Iterable[Scorer]] = tuple) -> list[np.ndarray]:
    """Raw channel errors of each scorer's windows: scorers of one :func:`architecture` run stacked (2 or more),
    through ``banks`` (kept by the caller; a bank missing a scorer is rebuilt from that architecture's scorers among
    ``every()`` and those asked for), the others one by one. ``every`` is called only when a bank must grow: a
    worker's list of all its sensors' models would cost every step ~0.3 ms at 10k sensors."""
    out: list[np.ndarray] = [np.empty(0)] * len(scorers)
    groups: dict[Hashable, list[int]] = {}
    for i, s in enumerate(scorers):
        groups.setdefault(architecture(s), []).append(i)
    for key, idx in groups.items():
        if len(idx) == 1:
            out[idx[0]] = scorers[idx[0]].raw_channel_errors(windows[idx[0]])
            continue
        group = [scorers[i] for i in idx]
        bank = _bank(key, group, windows[idx[0]].shape[1], banks, every)
        for i, e in zip(idx, bank.channel_errors(group, [windows[i] for i in idx])):
            out[i] = e
    return out


def channel_errors_of(scorers: Sequence[Scorer], which: np.ndarray, windows: np.ndarray,
                      banks: dict[Hashable, ModelBank], every: Callable[[], Iterable[Scorer]] = tuple) -> np.ndarray:
    """Raw channel errors ``(B, C)`` of raw windows ``(B, W, C)``, window ``i`` by ``scorers[which[i]]``
    (each scorer with a window at least): :func:`channel_errors_many` for a step's windows as one array. Scorers
    of one architecture go through :meth:`ModelBank.errors_at`; those of several, or one alone, as there."""
    if len(scorers) > 1:
        found = _rows_in(banks.values(), scorers)  # a step in service: no architecture to look up
        if found is None and len(keys := {architecture(s) for s in scorers}) == 1:
            found = _rows_in([_bank(keys.pop(), scorers, windows.shape[1], banks, every)], scorers)
        if found is not None:
            bank, rows = found
            return bank.errors_at(rows[which], windows)
    order = np.argsort(which, kind="stable")
    parts = np.split(order, np.cumsum(np.bincount(which, minlength=len(scorers)))[:-1])
    errors = np.empty((len(windows), windows.shape[2]))
    for part, e in zip(parts, channel_errors_many(scorers, [windows[p] for p in parts], banks, every)):
        errors[part] = e
    return errors


def _rows_in(banks: Iterable[ModelBank], scorers: Sequence[Scorer]) -> tuple[ModelBank, np.ndarray] | None:
    """The first of ``banks`` that holds all of ``scorers``, with their rows in it; None: none does."""
    for bank in banks:
        index = bank.index
        held = [index.get(id(s), -1) for s in scorers]
        if -1 not in held:
            return bank, np.array(held, dtype=np.intp)
    return None


def _bank(key: Hashable, group: Sequence[Scorer], window_size: int, banks: dict[Hashable, ModelBank],
          every: Callable[[], Iterable[Scorer]]) -> ModelBank:
    """The bank of architecture ``key`` in ``banks``, grown or built again when it misses one of ``group``."""
    bank = banks.get(key)
    if bank is None or not bank.holds(group):
        members = {id(s): s for s in every() if architecture(s) == key}
        members.update((id(s), s) for s in group)
        missing = [s for s in members.values() if id(s) not in bank.index] if bank is not None else []
        if bank is not None and len(bank.scorers) + len(missing) <= 2 * len(members):
            bank.extend(missing)  # the rows of replaced models stay until they are as many as the live ones
        else:
            bank = banks[key] = ModelBank(list(members.values()), window_size)
    return bank
