"""Golden outputs: the shipped world and checkpoints saved by earlier code load and compute what
they computed then (tests/golden/make_golden.py wrote the expected tensors on 2026-12-01).

Floats are compared within float32 noise, as other CPUs round differently; on the machine that
wrote them, `GENIE2_GOLDEN_EXACT=1 python -m pytest tests/test_golden.py` asks for every bit."""

import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
import make_golden  # noqa: E402


@pytest.fixture(scope="module")
def expected() -> dict:
    return load_file(str(GOLDEN / "outputs.safetensors"))


def check(tag: str, got: dict, expected: dict) -> None:
    """Codes equal, every float output within float32 noise of the golden one (or equal)."""
    exact = os.environ.get("GENIE2_GOLDEN_EXACT") == "1"
    for name, value in got.items():
        want = expected[f"{tag}/{name}"]
        if want.dtype.is_floating_point and not exact:
            torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-5, msg=f"{tag}/{name}")
        else:
            assert torch.equal(value, want), f"{tag}/{name}"


def test_the_shipped_world_computes_what_it_did(expected):
    import genie2

    world = genie2.load()
    check("shipped", make_golden.outputs(world.model, *make_golden.shipped_inputs(world)), expected)


@pytest.mark.parametrize(
    "tag, folder, seed", [("world", make_golden.WORLD, 1), ("reference", make_golden.REFERENCE, 2)]
)
def test_a_checkpoint_saved_by_earlier_code_loads_and_computes_what_it_did(expected, tag, folder, seed):
    from genie2 import Genie2

    model = Genie2.from_pretrained(folder)
    check(tag, make_golden.outputs(model, *make_golden.inputs(model, seed)), expected)
