"""Hypothesis settings profiles, registered when hypothesis loads (its entry point), so that
`--hypothesis-profile ckpt-ci` / `ckpt-nightly` work in any project. Nothing is loaded for
the user; this module imports neither torch nor the rest of pytest-ckpt."""

from __future__ import annotations


def _hypothesis_setup_hook() -> None:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ckpt-ci",
        derandomize=True,
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,
    )
    settings.register_profile(
        "ckpt-nightly",
        max_examples=10_000,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
