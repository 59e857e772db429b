"""A `DataLoader`'s position as checkpoint state, and the sample ids each batch held.

A DataLoader's position lives in its iterator, which no `state_dict()` holds: a checkpoint
that leaves it out restarts the epoch after a resume (samples read twice, others never read)
or, with a generator not saved, reshuffles it. `LoaderPosition` keeps the position and saves
what restores it:

- a `torch.utils.data.DataLoader`: the epoch, the batches consumed in it, and the state of the
  generator the epoch was drawn from (the loader's `generator`, or the global torch RNG when
  it has none) at the moment the epoch began. Restoring sets that state, starts the epoch
  again (drawing the same shuffle and the same worker seeds) and reads the consumed batches
  once more: exact with `num_workers > 0` and random augmentations, at the cost of loading
  the skipped batches.
- torchdata's `StatefulDataLoader`: its own `state_dict()`, with its stateful samplers, and
  the state of its generator (its state_dict restores the current epoch's shuffle but leaves
  the generator the next epoch draws from where the fresh loader had it).

Sample ids are recorded through the index sampler (the main process draws every index, with
workers too, and batches come back in the order their indices were drawn), so each consumed
batch is matched with the indices drawn for it, prefetching included.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from pytest_ckpt.errors import SubjectError


class _Recorder:
    """Yields what `inner` yields and appends each item to `drawn` (in draw order)."""

    def __init__(self, inner: Any, drawn: deque[Any]) -> None:
        self.inner, self.drawn = inner, drawn

    def __iter__(self) -> Iterator[Any]:
        inner_iter = iter(self.inner)
        if _stateful(inner_iter):
            return _StatefulRecordingIterator(inner_iter, self.drawn)
        return _RecordingIterator(inner_iter, self.drawn)

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str) -> Any:  # batch_size, drop_last, sampler, ...
        return getattr(self.inner, name)


class _StatefulRecorder(_Recorder):
    """A recorder torchdata sees as Stateful, so it restores the sampler from its state."""

    def state_dict(self) -> Any:
        return self.inner.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.inner.load_state_dict(state)


class _RecordingIterator:
    def __init__(self, inner: Iterator[Any], drawn: deque[Any]) -> None:
        self.inner, self.drawn = inner, drawn

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        item = next(self.inner)
        self.drawn.append(item)
        return item


class _StatefulIterator(Protocol):
    """A StatefulDataLoader's iterator: it saves and restores its own position."""

    def __iter__(self) -> Iterator[Any]: ...

    def __next__(self) -> Any: ...

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any, /) -> None: ...


class _StatefulRecordingIterator(_RecordingIterator):
    def __init__(self, inner: _StatefulIterator, drawn: deque[Any]) -> None:
        super().__init__(inner, drawn)
        self.stateful_inner = inner

    def state_dict(self) -> Any:
        return self.stateful_inner.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.stateful_inner.load_state_dict(state)


def _stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


class LoaderPosition:
    """A data loader, where it stands, and the ids of the samples each batch held."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.stateful = type(loader).__name__ == "StatefulDataLoader" and _stateful(loader)
        self.drawn: deque[Any] = deque()
        self.records = _record_indices(loader, self.drawn, self.stateful)
        self.iterator: Iterator[Any] | None = None
        self.epoch, self.batches = 0, 0
        self.epoch_start: Any = None

    def next_batch(self) -> tuple[Any, list[Any] | None]:
        """The next batch (a new epoch when one ends) and its sample ids (None when the
        loader has no index sampler: an IterableDataset)."""
        for _ in range(2):
            iterator = self.iterator if self.iterator is not None else self._start_epoch()
            try:
                batch = next(iterator)
            except StopIteration:
                self.iterator = None
                self.epoch += 1
                continue
            self.batches += 1
            return batch, self._ids()
        raise SubjectError("make_loader() gave a DataLoader with no batches")

    def _start_epoch(self) -> Iterator[Any]:
        import torch

        if not self.stateful:
            generator = self.loader.generator
            self.epoch_start = (
                generator.get_state() if generator is not None else torch.get_rng_state()
            )
            self.batches = 0
            self.drawn.clear()
        self.iterator = iter(self.loader)
        return self.iterator

    def _ids(self) -> list[Any] | None:
        if not self.records:
            return None
        if not self.drawn:
            raise SubjectError("a batch came back for which the sampler drew no indices")
        drawn = self.drawn.popleft()
        ids = list(drawn) if isinstance(drawn, (list, tuple)) else [drawn]
        return [int(i) if hasattr(i, "__index__") else i for i in ids]

    def state_dict(self) -> dict[str, Any]:
        """Primitives and tensors (torch.load(weights_only=True) loads them)."""
        state: dict[str, Any] = {"epoch": self.epoch, "batches": self.batches}
        if self.stateful:
            state["loader"] = self.loader.state_dict()
            if self.loader.generator is not None:  # what the next epoch's shuffle draws from
                state["generator"] = self.loader.generator.get_state()
            return state
        if self.epoch_start is not None:
            state["epoch_start"] = self.epoch_start
            state["uses_global_rng"] = self.loader.generator is None
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Stand where `state` says: the global torch RNG is left as it was found."""
        import torch

        self.epoch, self.batches, self.iterator = state["epoch"], state["batches"], None
        self.drawn.clear()
        if self.stateful:
            self.loader.load_state_dict(state["loader"])
            self.iterator = iter(self.loader)  # restores this epoch's shuffle, drawn eagerly
            if "generator" in state:
                self.loader.generator.set_state(state["generator"])
            return
        if "epoch_start" not in state:
            return
        global_state = torch.get_rng_state()
        generator = self.loader.generator
        own_state = generator.get_state() if generator is not None else None
        if state["uses_global_rng"]:
            torch.set_rng_state(state["epoch_start"])
        else:
            generator.set_state(state["epoch_start"])
        self._start_epoch()
        for _ in range(state["batches"]):
            self.next_batch()
        torch.set_rng_state(global_state)
        if own_state is not None and state["uses_global_rng"]:
            generator.set_state(own_state)


def _record_indices(loader: Any, drawn: deque[Any], stateful: bool) -> bool:
    """Put a recorder in front of the loader's index sampler; False when it has none that
    draws sample indices (an IterableDataset). DataLoader refuses to have its samplers set
    after construction (its __setattr__ guard); the recorder yields the very same indices."""
    from torch.utils.data import IterableDataset

    if isinstance(loader.dataset, IterableDataset):
        return False
    name = "batch_sampler" if loader.batch_sampler is not None else "sampler"
    inner = getattr(loader, name)
    torchdata_sampler = type(inner).__module__.startswith("torchdata.")
    if stateful and not (_stateful(inner) or torchdata_sampler):
        raise SubjectError(
            "a StatefulDataLoader whose index sampler keeps no state cannot be positioned "
            "exactly (torchdata fast-forwards it): use torchdata's samplers (its default for "
            "shuffle=True and for sequential loading)"
        )
    recorder = _StatefulRecorder if _stateful(inner) else _Recorder
    object.__setattr__(loader, name, recorder(inner, drawn))
    return True
