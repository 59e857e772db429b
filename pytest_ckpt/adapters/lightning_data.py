"""A `LightningSubject`'s DataLoader: the sample ids each step read, and where the loader
stands after a resume, as Lightning decides it.

Lightning 2.6 saves a train loader's position only when the loader is stateful (it has
`state_dict` and `load_state_dict`, as torchdata's `StatefulDataLoader` has): its
`state_dict()` goes into the checkpoint at `loops.fit_loop.state_dict.combined_loader` and is
loaded into the fresh loader before a `ckpt_path` resume asks it for a batch. A plain
`DataLoader` keeps nothing: the resumed epoch starts a fresh iterator while the fit loop's batch
count goes on from the checkpoint, so a resume mid-epoch reads the epoch's first batches again
and never its last ones (Lightning warns "your dataloader is not resumable" and trains on).
Nor does Lightning save the loader's `generator`: an epoch begun after a resume draws its shuffle
from the freshly seeded one. At the start of every epoch it calls `set_epoch(epoch)` on the
samplers that have it (a `DistributedSampler`: one shuffle per epoch, whatever was resumed).
Measured with Lightning 2.6.6; the tests check that adapter and native mode agree.

`LightningLoader` is what both modes share: the loader `make_loader(generator)` made, a
recorder in front of its index sampler (`adapters.loaders`), and the ids of each batch taken,
matched in draw order (Lightning prefetches a batch ahead; workers draw in the main process).
In adapter mode it is also the system's data position, with Lightning's rule above.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_ckpt.adapters.loaders import LoaderPosition, _Recorder, _StatefulRecorder
from pytest_ckpt.errors import SubjectError


class _FreshIteration:
    """A recorder whose new pass over the sampler forgets what an earlier one drew: Lightning
    makes (and drops) an iterator to check that a loader iterates, and with workers that
    iterator has already drawn the indices of the batches it prefetched."""

    drawn: Any

    def __iter__(self) -> Any:
        self.drawn.clear()
        return super().__iter__()  # type: ignore[misc]


class _LightningRecorder(_FreshIteration, _Recorder):
    pass


class _LightningStatefulRecorder(_FreshIteration, _StatefulRecorder):
    pass


class LightningLoader(LoaderPosition):
    """A DataLoader as Lightning's fit loop reads and resumes it (module docstring)."""

    def __init__(self, loader: Any) -> None:
        super().__init__(loader)
        # Lightning's own test (`lightning.fabric.utilities.types._Stateful`): duck typing
        self.resumable = callable(getattr(loader, "state_dict", None)) and callable(
            getattr(loader, "load_state_dict", None)
        )
        try:
            self.length = len(loader)
        except TypeError:
            raise SubjectError(
                "make_loader() gave a DataLoader without a length (an IterableDataset): "
                "LightningSubject needs one whose epoch has a known number of batches"
            ) from None
        if self.length < 1:
            raise SubjectError("make_loader() gave a DataLoader with no batches")
        for name in ("batch_sampler", "sampler"):
            recorder: Any = getattr(loader, name, None)
            if type(recorder) is _Recorder:
                fresh: _Recorder = _LightningRecorder(recorder.inner, self.drawn)
            elif type(recorder) is _StatefulRecorder:
                fresh = _LightningStatefulRecorder(recorder.inner, self.drawn)
            else:
                continue
            object.__setattr__(loader, name, fresh)  # DataLoader guards a plain set
        self.loaded: list[Any] = []  # each state Lightning (or rebuild) loaded into the loader
        if self.resumable:
            own_load = loader.load_state_dict

            def load_state_dict(state: Any) -> None:
                self.loaded.append(state)
                own_load(state)

            loader.load_state_dict = load_state_dict

    def taken_ids(self) -> list[Any] | None:
        """The sample ids of the next batch taken from the loader, in draw order (None
        when it has no index sampler)."""
        return self._ids()

    def next_batch(self) -> tuple[Any, list[Any] | None]:
        """The next batch and its ids: an epoch is `len(loader)` batches, counted as the fit
        loop counts them (from the checkpoint after a resume, whatever the iterator holds)."""
        for _ in range(2):
            if self.iterator is None:
                if self.batches >= self.length:
                    self.epoch, self.batches = self.epoch + 1, 0
                self._start_iterator()
            assert self.iterator is not None
            try:
                batch = next(self.iterator)
            except StopIteration:  # a restored loader that had finished its epoch
                self.iterator, self.batches = None, self.length
                continue
            self.batches += 1
            if self.batches >= self.length:
                self.iterator = None  # the fit loop asks it for no more batches
            return batch, self._ids()
        raise SubjectError("make_loader() gave a DataLoader that yields no batch")

    def _start_iterator(self) -> None:
        from lightning.fabric.utilities.data import _set_sampler_epoch

        self.drawn.clear()  # what a dropped iterator drew ahead is not read
        _set_sampler_epoch(self.loader, self.epoch)
        self.iterator = iter(self.loader)

    def state_dict(self) -> dict[str, Any]:
        """What Lightning keeps of the loader: `combined_loader` (only for a stateful one)."""
        return {"combined_loader": [self.loader.state_dict()]} if self.resumable else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """`state`: the fit loop's `state_dict` entry (`combined_loader`, when Lightning saved
        one) plus `epoch` and `batches` (the epoch and the batches done in it, which Lightning
        keeps in its progress counters)."""
        import torch

        self.epoch, self.batches, self.iterator = int(state["epoch"]), int(state["batches"]), None
        self.drawn.clear()
        saved = list(state.get("combined_loader") or ())
        if self.resumable and saved:
            self.loader.load_state_dict(saved[0])
        if self.batches == 0 and self.epoch > 0:  # at an epoch's end, as the continued run
            self.epoch, self.batches = self.epoch - 1, self.length
        elif self.batches > 0:  # mid-epoch: the resumed fit loop's iterator, as it starts it
            with torch.random.fork_rng(devices=[]):
                self._start_iterator()
