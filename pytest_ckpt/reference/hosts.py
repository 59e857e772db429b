"""Host networks that seeds grow into: a small CNN and a small causal Transformer.

Both satisfy `HostProtocol`. A host is a stem, `depth` blocks and a readout; row `r` of a
slot grid injects after block `r`, and the columns of a row are parallel slots at that depth.
The resolved host kind and its sizes are part of `config()`, so a checkpoint always rebuilds
the host it was taken from (a Transformer slot never comes back as a CNN slot).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from pytest_ckpt.reference.fields import read_fields
from pytest_ckpt.reference.slots import SlotConfig, parse_slot_id

HOST_SCHEMA_VERSION = 1


@dataclass(slots=True, frozen=True)
class InjectionPoint:
    """Where a slot row attaches: after block `depth`, activations of `width` channels.

    `layout` is "nchw" (channels second, image-like) or "ntc" (tokens, channels last).
    """

    depth: int
    width: int
    layout: str


@runtime_checkable
class HostProtocol(Protocol):
    """What `MorphogeneticModel` needs from a host network."""

    @property
    def injection_points(self) -> tuple[InjectionPoint, ...]: ...

    def slot_order(self, slots: SlotConfig) -> tuple[str, ...]: ...

    def forward_to(self, x: torch.Tensor, slot_id: str) -> torch.Tensor: ...

    def forward_from(self, h: torch.Tensor, slot_id: str) -> torch.Tensor: ...

    def forward_between(self, h: torch.Tensor, from_slot: str, to_slot: str) -> torch.Tensor: ...

    def config(self) -> dict[str, Any]: ...


class SegmentedHost(nn.Module):
    """Stem -> blocks -> readout, with the slot-facing protocol derived from those three parts."""

    kind: str = ""
    layout: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()

    # Subclasses provide these three.
    def stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def block_widths(self) -> tuple[int, ...]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def injection_points(self) -> tuple[InjectionPoint, ...]:
        return tuple(
            InjectionPoint(depth=d, width=w, layout=self.layout)
            for d, w in enumerate(self.block_widths())
        )

    def injection_point(self, slot_id: str) -> InjectionPoint:
        row, _ = parse_slot_id(slot_id)
        points = self.injection_points
        if row >= len(points):
            raise ValueError(
                f"slot {slot_id!r} needs injection depth {row}, but this {self.kind} host has "
                f"{len(points)} (rows 0..{len(points) - 1}); use a smaller grid or a deeper host"
            )
        return points[row]

    def slot_order(self, slots: SlotConfig) -> tuple[str, ...]:
        """Slots in the order the forward pass meets them (depth, then column)."""
        for slot_id in slots:
            self.injection_point(slot_id)
        return tuple(slots.slot_ids)

    def _run_blocks(self, h: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for block in self.blocks[start:stop]:
            h = block(h)
        return h

    def forward_to(self, x: torch.Tensor, slot_id: str) -> torch.Tensor:
        depth = self.injection_point(slot_id).depth
        return self._run_blocks(self.stem(x), 0, depth + 1)

    def forward_from(self, h: torch.Tensor, slot_id: str) -> torch.Tensor:
        depth = self.injection_point(slot_id).depth
        return self.readout(self._run_blocks(h, depth + 1, len(self.blocks)))

    def forward_between(self, h: torch.Tensor, from_slot: str, to_slot: str) -> torch.Tensor:
        start = self.injection_point(from_slot).depth
        stop = self.injection_point(to_slot).depth
        if stop < start:
            raise ValueError(f"slot {to_slot!r} lies before {from_slot!r} in the host")
        return self._run_blocks(h, start + 1, stop + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self._run_blocks(self.stem(x), 0, len(self.blocks)))


class CNNHost(SegmentedHost):
    """A small CIFAR-shaped (3x32x32) classifier; BatchNorm so buffers round-trip too."""

    kind = "cnn"
    layout = "nchw"

    def __init__(self, *, depth: int = 4, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        _check_positive(depth=depth, width=width, num_classes=num_classes)
        self.depth, self.width, self.num_classes = depth, width, num_classes
        self._stem = nn.Conv2d(3, width, kernel_size=3, padding=1, bias=False)
        for d in range(depth):
            pool = nn.MaxPool2d(2) if d in (1, 3) else nn.Identity()
            self.blocks.append(
                nn.Sequential(
                    nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                    pool,
                )
            )
        self.head = nn.Linear(width, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"CNNHost expects (batch, 3, H, W) images, got {tuple(x.shape)}")
        return self._stem(x)

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h.mean(dim=(2, 3)))

    def block_widths(self) -> tuple[int, ...]:
        return (self.width,) * self.depth

    def config(self) -> dict[str, Any]:
        return {
            "schema_version": HOST_SCHEMA_VERSION,
            "kind": self.kind,
            "depth": self.depth,
            "width": self.width,
            "num_classes": self.num_classes,
        }


class CausalBlock(nn.Module):
    """Pre-norm causal self-attention + MLP; no dropout, so the forward draws no randomness."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, c = h.shape
        q, k, v = self.qkv(self.norm1(h)).split(c, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for z in (q, k, v))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(attn.transpose(1, 2).reshape(b, t, c))
        return h + self.mlp(self.norm2(h))


class TransformerHost(SegmentedHost):
    """A small causal language model over token ids of shape (batch, seq_len)."""

    kind = "transformer"
    layout = "ntc"

    def __init__(
        self,
        *,
        depth: int = 4,
        d_model: int = 32,
        n_heads: int = 4,
        vocab_size: int = 32,
        max_seq_len: int = 16,
    ) -> None:
        super().__init__()
        _check_positive(
            depth=depth,
            d_model=d_model,
            n_heads=n_heads,
            vocab_size=vocab_size,
            max_seq_len=max_seq_len,
        )
        self.depth, self.d_model, self.n_heads = depth, d_model, n_heads
        self.vocab_size, self.max_seq_len = vocab_size, max_seq_len
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_seq_len, d_model)
        for _ in range(depth):
            self.blocks.append(CausalBlock(d_model, n_heads))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.dtype != torch.long or x.shape[1] > self.max_seq_len:
            raise ValueError(
                f"TransformerHost expects (batch, <= {self.max_seq_len}) int64 token ids, "
                f"got {tuple(x.shape)} {x.dtype}"
            )
        positions = torch.arange(x.shape[1], device=x.device)
        return self.token_embedding(x) + self.position_embedding(positions)

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(h))

    def block_widths(self) -> tuple[int, ...]:
        return (self.d_model,) * self.depth

    def config(self) -> dict[str, Any]:
        return {
            "schema_version": HOST_SCHEMA_VERSION,
            "kind": self.kind,
            "depth": self.depth,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "vocab_size": self.vocab_size,
            "max_seq_len": self.max_seq_len,
        }


HOSTS: Mapping[str, type[SegmentedHost]] = {"cnn": CNNHost, "transformer": TransformerHost}
_HOST_FIELDS: Mapping[str, dict[str, type]] = {
    "cnn": {"kind": str, "depth": int, "width": int, "num_classes": int},
    "transformer": {
        "kind": str,
        "depth": int,
        "d_model": int,
        "n_heads": int,
        "vocab_size": int,
        "max_seq_len": int,
    },
}


def build_host(config: Any) -> SegmentedHost:
    """Rebuild a host from its `config()`; unknown kinds and bad fields raise ValueError."""
    if not isinstance(config, Mapping):
        raise ValueError(f"host config: expected a dict, got {type(config).__name__}")
    kind = config.get("kind")
    if not isinstance(kind, str) or kind not in HOSTS:
        raise ValueError(f"host config: unknown host kind {kind!r}; expected one of {list(HOSTS)}")
    fields = read_fields(
        config, _HOST_FIELDS[kind], where=f"host config ({kind})", version=HOST_SCHEMA_VERSION
    )
    del fields["kind"]
    return HOSTS[kind](**fields)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"host {name} must be an int >= 1, got {value!r}")
