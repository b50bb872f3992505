"""Checks of exercise 06, DiT tokens: patchify, unpatchify, and adaLN's modulate.

patchify and unpatchify only move values, so they must equal ``imagediff.dit`` bit for bit, on
square and non-square images, with p = 1 and with one patch per image.  A wrong order is named:
first against the usual mistakes, then, for any other order, by the pixel that landed in the wrong
place."""
from __future__ import annotations

import math
from typing import Callable

import torch
from einops import rearrange

from imagediff import dit

from .assertions import CheckFailed, assert_close, assert_tensor_of_shape, require
from .inputs import seeded_generator

TOPIC = "DiT tokens: patchify, unpatchify and adaLN's modulate"
LIBRARY = "imagediff.dit"


_WRONG_PATCH_ORDERS = {
    "b c (h p) (w q) -> b (h w) (c p q)":
        "the values inside a token are in the order (channel, row in patch, column in patch); the library "
        "puts the channel LAST, (row in patch, column in patch, channel): pixel (0, 0) of the patch with all "
        "its channels, then pixel (0, 1), …",
    "b c (h p) (w q) -> b (h w) (c q p)":
        "the values inside a token are in the order (channel, column in patch, row in patch); the library's "
        "is (row in patch, column in patch, channel), channel last",
    "b c (h p) (w q) -> b (h w) (q p c)":
        "inside a patch the pixels go column by column; the library goes row by row, "
        "(row in patch, column in patch, channel)",
    "b c (h p) (w q) -> b (w h) (p q c)":
        "the patches are numbered column by column; the library numbers them row by row (left to right, "
        "then top to bottom), the order of the position table",
}

_PATCH_CASES = {  # name: (image shape, patch size)
    "square": [((2, 3, 8, 8), 2)],
    "non-square": [((2, 4, 8, 12), 4), ((2, 4, 8, 12), 2), ((3, 1, 6, 4), 2)],
    "edge": [((2, 3, 4, 6), 1), ((1, 3, 4, 4), 4)],
}


def _describe_pixel(value: float, shape: tuple[int, ...]) -> str:
    """The pixel of an image of `shape` whose value, in torch.arange order, is `value`."""
    if not math.isfinite(value) or value != int(value) or not 0 <= int(value) < math.prod(shape):
        return f"the value {value:g}, which is not a pixel of the image"
    index = int(value)
    _, channels, height, width = shape
    image, rest = divmod(index, channels * height * width)
    channel, rest = divmod(rest, height * width)
    row, column = divmod(rest, width)
    return f"(image {image}, channel {channel}, row {row}, column {column})"


def _describe_entry(value: float, shape: tuple[int, ...]) -> str:
    """The token entry of tokens of `shape` (B, N, K) whose value, in torch.arange order, is `value`."""
    if not math.isfinite(value) or value != int(value) or not 0 <= int(value) < math.prod(shape):
        return f"the value {value:g}, which is not an entry of the tokens"
    index = int(value)
    _, tokens, entries = shape
    image, rest = divmod(index, tokens * entries)
    token, entry = divmod(rest, entries)
    return f"(image {image}, token {token}, entry {entry})"


def checks(student) -> list[tuple[str, Callable[[], None]]]:
    def compare_patchify(x: torch.Tensor, p: int, what: str) -> None:
        expected = dit.patchify(x, p)  # (B, N, p·p·C)
        actual = student.patchify(x.clone(), p)
        assert_tensor_of_shape(actual, expected.shape, what, "(B, N, p·p·C)")
        if torch.equal(actual, expected):
            return
        for pattern, mistake in _WRONG_PATCH_ORDERS.items():
            if torch.equal(actual, rearrange(x, pattern, p=p, q=p)):
                raise CheckFailed(f"{what}: {mistake}")
        # Not a usual mistake: feed an image whose values say where they come from, and name one misplaced value.
        labelled = torch.arange(x.numel(), dtype=torch.float64).reshape(x.shape)
        got, want = student.patchify(labelled, p), dit.patchify(labelled, p)
        wrong = (got != want).nonzero()
        if len(wrong) == 0:
            raise CheckFailed(f"{what}: differs from the library (patchify only moves values: it must match "
                              "bit for bit)")
        b, n, k = (int(i) for i in wrong[0])
        raise CheckFailed(f"{what}: token {n} (image {b}), entry {k} holds "
                          f"{_describe_pixel(float(got[b, n, k]), x.shape)} but should hold "
                          f"{_describe_pixel(float(want[b, n, k]), x.shape)}")

    def compare_unpatchify(tokens: torch.Tensor, p: int, shape: tuple[int, ...], what: str) -> None:
        _, channels, height, width = shape
        expected = dit.unpatchify(tokens, p, height, width, channels)  # (B, C, H, W)
        actual = student.unpatchify(tokens.clone(), p, height, width, channels)
        assert_tensor_of_shape(actual, expected.shape, what, "(B, C, H, W)")
        if torch.equal(actual, expected):
            return
        for pattern, mistake in _WRONG_PATCH_ORDERS.items():
            inverse = " -> ".join(reversed(pattern.split(" -> ")))
            if torch.equal(actual, rearrange(tokens, inverse, h=height // p, w=width // p, p=p, q=p)):
                raise CheckFailed(f"{what}: {mistake}")
        labelled = torch.arange(tokens.numel(), dtype=torch.float64).reshape(tokens.shape)
        got = student.unpatchify(labelled, p, height, width, channels)
        want = dit.unpatchify(labelled, p, height, width, channels)
        wrong = (got != want).nonzero()
        if len(wrong) == 0:
            raise CheckFailed(f"{what}: differs from the library (unpatchify only moves values: it must match "
                              "bit for bit)")
        b, c, i, j = (int(index) for index in wrong[0])
        raise CheckFailed(f"{what}: pixel (image {b}, channel {c}, row {i}, column {j}) holds "
                          f"{_describe_entry(float(got[b, c, i, j]), tokens.shape)} but should hold "
                          f"{_describe_entry(float(want[b, c, i, j]), tokens.shape)}")

    def images(shape: tuple[int, ...], seed: int) -> torch.Tensor:
        return torch.randn(shape, generator=seeded_generator(seed))

    def patchify_cases(kind: str):
        require(student, "patchify")
        for seed, (shape, p) in enumerate(_PATCH_CASES[kind], start=90):
            compare_patchify(images(shape, seed), p,
                             f"patchify of {shape[2]}×{shape[3]} images, C = {shape[1]}, p = {p}")

    def first_token():
        # Known value, no library involved: token 0 is the top-left 2×2 patch, pixel by pixel, channels last.
        require(student, "patchify")
        x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).reshape(2, 3, 4, 6)
        tokens = student.patchify(x, 2)
        if not isinstance(tokens, torch.Tensor) or tokens.shape != (2, 6, 12):
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise CheckFailed(f"patchify of (2, 3, 4, 6) with p = 2 gave {shape}, expected (2, 6, 12)")
        expected = torch.stack([x[0, :, 0, 0], x[0, :, 0, 1], x[0, :, 1, 0], x[0, :, 1, 1]]).flatten()  # (p·p·C,)
        if not torch.equal(tokens[0, 0], expected):
            for k in range(len(expected)):
                if tokens[0, 0, k] != expected[k]:
                    raise CheckFailed(f"token 0, entry {k} holds {_describe_pixel(float(tokens[0, 0, k]), x.shape)} "
                                      f"but should hold {_describe_pixel(float(expected[k]), x.shape)}: a token lists "
                                      "pixel (0, 0) of its patch with all its channels, then pixel (0, 1), … "
                                      "(row in patch, column in patch, channel)")
        compare_patchify(x, 2, "patchify of 4×6 images, C = 3, p = 2")

    def unpatchify_cases():
        require(student, "unpatchify")
        for seed, (shape, p) in enumerate(sum(_PATCH_CASES.values(), []), start=100):
            batch, channels, height, width = shape
            tokens = torch.randn(batch, (height // p) * (width // p), p * p * channels,
                                 generator=seeded_generator(seed))  # (B, N, p·p·C)
            compare_unpatchify(tokens, p, shape, f"unpatchify to {height}×{width} images, C = {channels}, p = {p}")

    def round_trips():
        require(student, "patchify", "unpatchify")
        for seed, (shape, p) in enumerate(sum(_PATCH_CASES.values(), []), start=110):
            batch, channels, height, width = shape
            x = images(shape, seed)
            back = student.unpatchify(student.patchify(x.clone(), p), p, height, width, channels)
            if not isinstance(back, torch.Tensor) or back.shape != x.shape or not torch.equal(back, x):
                raise CheckFailed(f"unpatchify(patchify(x)) is not x for {height}×{width} images, p = {p}: "
                                  "unpatchify must undo every step of patchify, in reverse order")
            tokens = torch.randn(batch, (height // p) * (width // p), p * p * channels,
                                 generator=seeded_generator(seed + 50))  # (B, N, p·p·C)
            again = student.patchify(student.unpatchify(tokens.clone(), p, height, width, channels), p)
            if not torch.equal(again, tokens):
                raise CheckFailed(f"patchify(unpatchify(tokens)) is not tokens for {height}×{width} images, p = {p}")

    def modulate_matches():
        require(student, "modulate")
        x = torch.randn(2, 5, 8, generator=seeded_generator(120), dtype=torch.float64)
        for what, shape in (("per example, (B, 1, D)", (2, 1, 8)), ("per token, (B, N, D)", (2, 5, 8))):
            shift = torch.randn(shape, generator=seeded_generator(121), dtype=torch.float64)
            scale = torch.randn(shape, generator=seeded_generator(122), dtype=torch.float64)
            assert_close(student.modulate(x, shift, scale), dit.modulate(x, shift, scale),
                         f"modulate with shift and scale {what}", atol=1e-12, rtol=1e-12)

    def modulate_zero_is_identity():
        require(student, "modulate")
        x = torch.randn(2, 5, 8, generator=seeded_generator(123))
        zeros = torch.zeros(2, 1, 8)
        result = student.modulate(x, zeros, zeros)
        if not isinstance(result, torch.Tensor) or result.shape != x.shape or not torch.equal(result, x):
            raise CheckFailed("a zero shift and scale must leave x unchanged (adaLN-Zero starts every block as "
                              "the identity): x · (1 + scale) + shift, not x · scale + shift")

    return [("patchify equals the library bit for bit, square 8×8, p = 2", lambda: patchify_cases("square")),
            ("patchify on non-square inputs (8×12 with p = 4 and 2, 6×4 with one channel)",
             lambda: patchify_cases("non-square")),
            ("patchify with p = 1 and with one patch per image", lambda: patchify_cases("edge")),
            ("the first token lists its pixels row by row, channels last", first_token),
            ("unpatchify equals the library bit for bit (square, non-square, p = 1, one patch)", unpatchify_cases),
            ("unpatchify(patchify(x)) = x and back, exactly", round_trips),
            ("modulate equals the library, shift and scale per example and per token", modulate_matches),
            ("zero modulation leaves x unchanged", modulate_zero_is_identity)]
