"""What a check asserts: a result equals the library's within a tolerance, or the check fails with a
message that says where and by how much.  Shared by every exercise's checks module."""
from __future__ import annotations

import math

import torch


class CheckFailed(AssertionError):
    """A check's result differs from the reference; the message says where and by how much."""


def require(module, *names: str) -> None:
    """The student's file defines a function under each of `names`, else say which are missing."""
    missing = [name for name in names if not callable(getattr(module, name, None))]
    if missing:
        raise CheckFailed(f"the file defines no function named {', '.join(missing)} (keep the given names)")


# ----------------------------------------------------------------------------------------------
# Tensors
# ----------------------------------------------------------------------------------------------

def assert_tensor_of_shape(actual, shape, what: str, layout: str = "") -> None:
    """`actual` is a tensor of `shape`; else say what came back (and the `layout`, e.g. "(B, N, D)")."""
    if not isinstance(actual, torch.Tensor):
        raise CheckFailed(f"{what}: expected a tensor, got {type(actual).__name__}")
    if actual.shape != shape:
        raise CheckFailed(f"{what}: shape {tuple(actual.shape)}, expected {tuple(shape)}"
                          + (f" = {layout}" if layout else ""))


def assert_close(actual, expected, what: str, atol: float = 1e-10, rtol: float = 1e-8) -> None:
    """Same shape, finite, and within tolerance of the reference; else say what differs."""
    expected = torch.as_tensor(expected)
    assert_tensor_of_shape(actual, expected.shape, what)
    if not torch.isfinite(actual).all():
        raise CheckFailed(f"{what}: contains NaN or inf (a 0/0, or a square root of a negative number?)")
    difference = (actual.double() - expected.double()).abs()
    allowed = atol + rtol * expected.double().abs()
    if (difference > allowed).any():
        worst = int((difference - allowed).flatten().argmax())
        raise CheckFailed(f"{what}: off by up to {float(difference.max()):.3g} "
                          f"(entry {worst}: got {float(actual.flatten()[worst]):.8g}, "
                          f"expected {float(expected.flatten()[worst]):.8g})")


def assert_dtype(actual: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """`actual` has `dtype`; else say so, and that the float64 schedule is the usual culprit."""
    if actual.dtype != dtype:
        raise CheckFailed(f"{what}: dtype {actual.dtype}, expected {dtype} (cast the float64 schedule values "
                          "to the sample's dtype)")


# ----------------------------------------------------------------------------------------------
# Numbers, not tensors (exercises 05 and 07 return Python floats)
# ----------------------------------------------------------------------------------------------

def as_number(value, what: str) -> float:
    """A Python number, or a tensor holding exactly one, as a float; else say what came back."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise CheckFailed(f"{what}: expected one number, got a tensor of shape {tuple(value.shape)}")
        return float(value.item())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise CheckFailed(f"{what}: expected a number, got {type(value).__name__}")


def assert_close_number(actual, expected: float, what: str, atol: float = 1e-10, rtol: float = 1e-8) -> float:
    """Like assert_close, for one number.  Returns it as a float."""
    actual = as_number(actual, what)
    if not math.isfinite(actual):
        raise CheckFailed(f"{what}: got {actual} (a 0/0, or a square root of a negative number?)")
    if abs(actual - expected) > atol + rtol * abs(expected):
        raise CheckFailed(f"{what}: got {actual:.12g}, expected {expected:.12g} "
                          f"(off by {abs(actual - expected):.3g})")
    return actual
