"""A space narrowed and written back (space.narrowing): the shipped spaces round-trip, a cut keeps the grid and the
order, and the subspace check refuses anything wider or shifted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from space.choices import Space
from space.dimensions import Dimension
from space.errors import ConvspaceError
from space.narrowing import is_subspace, narrow_choices, narrow_range, space_dict, space_yaml, spec_of, within

ROOT = Path(__file__).resolve().parents[2]
KERNEL = Dimension("kernel", "int", (), 3, 21, 2)


@pytest.mark.parametrize("name", ["default", "convnext"])
def test_a_shipped_space_written_back_reads_the_same(tmp_path, name):
    space = Space.from_yaml(name)
    path = tmp_path / "x.yaml"
    path.write_text(space_yaml(space, ["a header"], {"kernel": ["why it changed"]}))
    assert Space.from_yaml(path) == space and Space.from_dict(space_dict(space)) == space
    text = path.read_text()
    assert text.startswith("# a header\n") and "  # why it changed\n  kernel: " in text
    assert is_subspace(space, space)


def test_a_range_keeps_its_step_grid():
    cut = narrow_range(KERNEL, 5, 9)
    assert spec_of(cut) == {"int": [5, 9], "step": 2} and within(cut, KERNEL) and not within(KERNEL, cut)
    with pytest.raises(ConvspaceError, match=r"kernel: \[4, 9\] is not a sub-range of \[3, 21\] on its step 2"):
        narrow_range(KERNEL, 4, 9)  # off the grid: 4 is no kernel the space samples
    assert not within(Dimension("kernel", "int", (), 4, 8, 2), KERNEL)  # same width, shifted grid
    drop = Dimension("drop_path_rate", "float", (), 0.0, 0.5, 0.05)
    assert spec_of(narrow_range(drop, 0.1 + 0.2, 0.45)) == {"float": [0.3, 0.45], "step": 0.05}  # 0.30000000000000004 written 0.3
    assert within(drop, narrow_range(drop, 0.0, 0.5000000000000001))  # a bound as a trial may hold it: the whole range
    with pytest.raises(ConvspaceError, match=r"kernel: \[3.5, 9\]"):
        narrow_range(KERNEL, 3.5, 9)  # an int range takes no fraction (never truncated to 3)


def test_a_choice_list_keeps_its_order_and_its_kinds():
    patterns = Dimension("depth_pattern", "choice", ((3, 4, 6, 3), (1, 1, 3, 1), (2, 2, 17, 2)))
    assert narrow_choices(patterns, ["2,2,17,2", "3,4,6,3"]).values == ((3, 4, 6, 3), (2, 2, 17, 2))  # as a trial stores them
    bias = Dimension("conv_bias", "choice", (False, True))
    assert narrow_choices(bias, [True]).values == (True,)
    with pytest.raises(ConvspaceError, match="conv_bias"):
        narrow_choices(bias, [1])  # 1 is not True here, as in Dimension.allows
    with pytest.raises(ConvspaceError, match="only a choice list"):
        narrow_choices(KERNEL, [3])


def test_the_subspace_check_refuses_a_wider_or_rescaled_space():
    space = Space.from_yaml("default")
    wider = Space(space.name, "", {**space.dims, "kernel": Dimension("kernel", "int", (), 3, 23, 2)}, space.scale)
    assert not is_subspace(wider, space)
    assert not is_subspace(Space(space.name, "", space.dims, "absolute"), space)
    more = Space(space.name, "", {**space.dims, "act": Dimension("act", "choice", ("relu", "gelu", "silu", "elu"))}, space.scale)
    assert not is_subspace(more, space)


def test_narrowing_imports_no_torch():
    code = "import sys, space.narrowing; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout.strip() == "False"
