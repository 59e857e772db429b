"""The pytest hooks: each one delegates to the session (`plugin.session`) in a few lines.

Nothing heavy is imported at module level: with `--ckpt-roundtrip` off, installing the plugin
costs an option group and a few fixture definitions, and never `import torch`.
"""

from __future__ import annotations

import pytest

from pytest_ckpt.plugin.matrix import MARKERS, collect_matrix
from pytest_ckpt.plugin.option_values import pair_id
from pytest_ckpt.plugin.options import add_options, check_report_option_form, resolve_options
from pytest_ckpt.plugin.session import SESSION_KEY, CkptSession, ckpt_session
from pytest_ckpt.vocabulary import grid_id


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    check_report_option_form(config)  # even with the matrix off: the ini that turns it on is lost
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.stash[SESSION_KEY] = CkptSession(config, resolve_options(config))
    ckpt_session(config).take_node_id_args()
    if ckpt_session(config).options.enabled:
        ckpt_session(config).start()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items) -> None:
    """Append the generated matrix before -k/-m/--deselect filter the items."""
    if ckpt_session(config).options.enabled:
        items.extend(collect_matrix(session))
        ckpt_session(config).check_subject_fixture(session, items)
        ckpt_session(config).select_node_ids(items)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `ckpt_stage` and `ckpt_grid` together, so ids read `BLENDING-2x2` (or
    `WARMUP` for a subject without slot grids), then `ckpt_world_size` (`BLENDING-2x2-2:1`)."""
    names, ckpt = metafunc.fixturenames, ckpt_session(metafunc.config)
    if "ckpt_stage" in names and "ckpt_grid" in names:
        cells = [(stage, grid) for stage in ckpt.stages() for grid in ckpt.grids()]
        ids = [ckpt.cell_id(stage, grid) for stage, grid in cells]
        metafunc.parametrize(("ckpt_stage", "ckpt_grid"), cells, ids=ids)
    elif "ckpt_stage" in names:
        metafunc.parametrize("ckpt_stage", ckpt.stages(), ids=str)
    elif "ckpt_grid" in names:
        metafunc.parametrize("ckpt_grid", ckpt.grids(), ids=grid_id)
    if "ckpt_world_size" in names:
        metafunc.parametrize("ckpt_world_size", ckpt.options.world_sizes, ids=pair_id)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if ckpt_session(session.config).options.enabled:  # it records the matrix's results
        session.config.pluginmanager.register(ckpt_session(session.config), "ckpt-session")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lines = ckpt_session(config).summary_lines()
    if lines:
        terminalreporter.write_sep("=", "pytest-ckpt matrix")
        for line in lines:
            terminalreporter.write_line(line)
    for pattern in ckpt_session(config).unmatched_patterns():
        terminalreporter.write_line(
            f"warning: snapshot tolerance pattern {pattern!r} matched no value in this run's "
            "snapshots: check its dotted path (e.g. state.model.0.weight)",
            yellow=True,
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    ckpt_session(session.config).write_report()
    if hasattr(session.config, "workeroutput"):  # to the xdist controller
        rules, matched = ckpt_session(session.config).pattern_usage()
        session.config.workeroutput["ckpt_patterns"] = {"rules": rules, "matched": sorted(matched)}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist: a worker's snapshot pattern usage, for the controller's warning."""
    usage = getattr(node, "workeroutput", {}).get("ckpt_patterns")
    if usage:
        ckpt_session(node.config).add_pattern_usage(usage)
