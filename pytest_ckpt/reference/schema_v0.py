"""The reference system's schema 0, as `pytest-ckpt migrate` leaves it: `adapt_v0` turns it
into a schema-1 checkpoint.

It lives with the reference system because it knows the reference system's classes
(`SeedStage`, the slot and seed-state schema versions); the core names it only by string,
as the adapter `--reference-v0` names
(`pytest-ckpt migrate --adapt pytest_ckpt.reference.schema_v0:adapt_v0`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from pytest_ckpt.migrate.schema import schema_version_of
from pytest_ckpt.reference.lifecycle import SEED_STATE_SCHEMA_VERSION, SeedStage
from pytest_ckpt.reference.slot import SLOT_SCHEMA_VERSION


def adapt_v0(migrated: Mapping[str, Any]) -> dict[str, Any]:
    """A schema-0 reference checkpoint, after `pytest-ckpt migrate`, as a schema-1 checkpoint.

    In schema 0 each slot's extra_state held a SeedState object (stages as Enum members,
    times as datetimes, history as a deque), the blend settings, the gate module of a gated
    blend, and the last telemetry event. After migration those are primitives; here stage
    values become names, ISO times become float timestamps, the gate's weights move to the
    `blend_gate` submodule while BLENDING (a later stage's stale gate is dropped, as is the
    telemetry event: neither is state of the model).
    """
    if schema_version_of(migrated) != 0:
        raise ValueError("adapt_v0 takes a migrated schema-0 checkpoint")

    def stamp(text: str) -> float:
        return datetime.datetime.fromisoformat(text).timestamp()

    def seed_state(old: Mapping[str, Any]) -> dict[str, Any]:
        previous = old["previous_stage"]
        return {
            "schema_version": SEED_STATE_SCHEMA_VERSION,
            "seed_id": old["seed_id"],
            "slot_id": old["slot_id"],
            "blueprint": old["blueprint"],
            "stage": SeedStage(old["stage"]).name,
            "previous_stage": None if previous is None else SeedStage(previous).name,
            "stage_entered_at": stamp(old["stage_entered_at"]),
            "stage_history": [[SeedStage(v).name, stamp(t)] for v, t in old["stage_history"]],
            "epochs_in_stage": old["epochs_in_stage"],
            "epochs_total": old["epochs_total"],
            "alpha": old["alpha"],
            "isolate_gradients": old["isolate_gradients"],
            "metrics": {"schema_version": SEED_STATE_SCHEMA_VERSION, **old["metrics"]},
        }

    state_dict = dict(migrated["state_dict"])
    odd = next((key for key in state_dict if type(key) is not str), None)
    if odd is not None:
        raise ValueError(f"state_dict key {odd!r:.60} is not a str")
    seed_slots = {}
    for key in [
        k for k in state_dict if k.startswith("seed_slots.") and k.endswith("._extra_state")
    ]:
        slot_id = key.split(".")[1]
        old = state_dict[key]
        seed = None if old["seed_state"] is None else seed_state(old["seed_state"])
        blend = old["blend"]
        gate = old["blend_module"]
        if seed is not None and seed["stage"] == "BLENDING" and gate is not None:
            for name, tensor in gate["state_dict"].items():
                state_dict[f"seed_slots.{slot_id}.blend_gate.{name}"] = tensor
        extra = {
            "schema_version": SLOT_SCHEMA_VERSION,
            "slot_id": slot_id,
            "seeds_started": old["seeds_started"],
            "seed_state": seed,
            "blend": None if blend is None else {"schema_version": 1, **blend},
        }
        state_dict[key] = extra
        seed_slots[slot_id] = extra
    config = {**migrated["config"], "schema_version": 1, "seed_slots": seed_slots}
    return {"schema_version": 1, "config": config, "state_dict": state_dict}
