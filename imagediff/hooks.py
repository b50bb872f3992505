"""Named hook points: read or edit any intermediate activation of a model, by name.

A `HookPoint` is an identity module placed at a site worth looking at (the residual stream before a
block, the queries after RoPE, an attention pattern, ...). It does nothing until a hook is attached:

    x = self.hook_resid_pre(x)          # in a block's forward; returns x unchanged, at no cost

Every hook point gets its dotted module name ("blocks.2.attention.hook_q") when the model is built
(`name_hook_points`), and is addressed by it — or by (kind, layer), ("q", 2), in a cache. This is the
design of TransformerLens, in a few dozen lines of plain PyTorch:

    with hooks(model, [("blocks.1.hook_resid_post", fn)]):   # the only way hooks are added here
        out = model(x_t, t)                                  # fn(activation, hook) runs at that site
    # here every hook is gone again, also if the forward raised

    out, cache = run_with_cache(model, x_t, t, names=["resid_post", "pattern"], layers=[1, 2])
    cache["blocks.1.hook_resid_post"], cache["resid_post", 1], cache.stack("resid_post")  # (2, B, N, D)

A hook function takes (activation, hook_point) and returns None (just looking) or a tensor of the
same shape, which replaces the activation from there on (editing: ablations, patching, steering).

Only what is asked for is kept: `run_with_cache` hooks only the named sites and layers, and
`select(name, tensor)` can cut each activation down (some frames, a mean over tokens) before it is
stored, so caching one site of one layer does not hold the others in memory. Some sites are
expensive and are computed only when hooked: the attention scores and pattern (otherwise the fused
SDPA kernel runs and never forms them) and the per-head outputs (`SelfAttention.head_outputs_needed`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from typing import Callable, Iterator, Optional, Union

import torch
import torch.nn as nn

# fn(activation, hook_point) -> None (look) or a tensor of the activation's shape (edit).
HookFunction = Callable[[torch.Tensor, "HookPoint"], Optional[torch.Tensor]]
# Which hook points a hook goes to: a full name, or a predicate on names.
NameFilter = Union[str, Callable[[str], bool]]


class HookPoint(nn.Module):
    """An identity at a named site. ``hook_point(x)`` returns x, or what an attached hook returns.

    With no hook attached, calling it skips nn.Module's dispatch entirely (a Python function call and
    a dict check), so the sites cost nothing measurable (`videodiff.bench` measures it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.name: Optional[str] = None  # set by name_hook_points

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self._forward_hooks:
            return x
        return super().__call__(x)

    @property
    def is_hooked(self) -> bool:
        """Whether a hook is attached: sites that cost extra work are computed only then."""
        return bool(self._forward_hooks)

    @property
    def kind(self) -> str:
        """The site's kind, its name's last part without "hook_": "blocks.2.hook_resid_post" -> "resid_post"."""
        return self.name.rsplit(".", 1)[-1].removeprefix("hook_") if self.name else ""

    @property
    def layer(self) -> Optional[int]:
        """The block index for a site inside ``blocks.i``, None for sites outside the blocks."""
        match = re.search(r"(?:^|\.)blocks\.(\d+)\.", self.name or "")
        return int(match.group(1)) if match else None

    def extra_repr(self) -> str:
        return repr(self.name)


def name_hook_points(model: nn.Module) -> None:
    """Give every HookPoint in ``model`` its dotted module name (call at the end of __init__)."""
    for name, module in model.named_modules():
        if isinstance(module, HookPoint):
            module.name = name


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """Every hook point of ``model`` by name, in the order of `named_modules` (registration order)."""
    return {module.name: module for module in model.modules() if isinstance(module, HookPoint)}


def hook_names(model: nn.Module) -> list[str]:
    return list(hook_points(model))


def _matching(model: nn.Module, name_filter: NameFilter) -> list[HookPoint]:
    points = hook_points(model)
    if callable(name_filter):
        return [point for name, point in points.items() if name_filter(name)]
    if name_filter not in points:
        close = [name for name in points if name.endswith(str(name_filter).rsplit(".", 1)[-1])][:4]
        raise KeyError(
            f"no hook point named {name_filter!r} in this {type(model).__name__}"
            + (f"; did you mean one of {close}?" if close else "; list them with hook_names(model).")
        )
    return [points[name_filter]]


@contextlib.contextmanager
def hooks(model: nn.Module, fwd_hooks: Iterable[tuple[NameFilter, HookFunction]]) -> Iterator[nn.Module]:
    """Attach ``fwd_hooks`` [(name or predicate, fn), ...] for the ``with`` body; always remove them.

    fn(activation, hook_point) returning a tensor replaces the activation; returning None leaves it.
    A name that matches no hook point raises KeyError before anything is attached.
    """
    handles = []
    try:
        for name_filter, function in fwd_hooks:
            points = _matching(model, name_filter)
            for point in points:
                handles.append(point.register_forward_hook(_adapter(function)))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _adapter(function: HookFunction):
    # nn.Module forward hooks receive (module, inputs, output); ours receive (activation, hook_point).
    def hook(module, inputs, output):
        result = function(output, module)
        if result is not None and (not isinstance(result, torch.Tensor) or result.shape != output.shape):
            got = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
            raise ValueError(
                f"the hook at {module.name} returned {got}; a hook returns None or a tensor of the "
                f"activation's shape {tuple(output.shape)}."
            )
        return result

    return hook


def remove_all_hooks(model: nn.Module) -> None:
    """Detach every hook from every hook point (for hooks added by hand, outside `hooks`)."""
    for point in hook_points(model).values():
        point._forward_hooks.clear()


# ---------------------------------------------------------------------------------------------
#                                           The cache
# ---------------------------------------------------------------------------------------------


class ActivationCache(Mapping):
    """Activations by hook-point name; also indexed by (kind, layer), and stacked over layers.

    cache["blocks.1.hook_resid_post"] == cache["resid_post", 1];  cache["patch_embed"] for a site
    outside the blocks; cache.stack("resid_post") -> (layers, ...) in layer order.
    """

    def __init__(self, activations: dict[str, torch.Tensor], points: Mapping[str, HookPoint]) -> None:
        self._activations = activations
        self._by_kind: dict[tuple[str, Optional[int]], str] = {}
        for name in activations:
            point = points[name]
            self._by_kind[(point.kind, point.layer)] = name

    def _name(self, key) -> str:
        if isinstance(key, tuple):
            kind, layer = key
            if (kind, layer) not in self._by_kind:
                raise KeyError(f"{key!r} is not in this cache; it holds {sorted(self._by_kind, key=str)}.")
            return self._by_kind[(kind, layer)]
        if key in self._activations:
            return key
        if (key, None) in self._by_kind:
            return self._by_kind[(key, None)]
        raise KeyError(f"{key!r} is not in this cache; it holds {list(self._activations)}.")

    def __getitem__(self, key) -> torch.Tensor:
        return self._activations[self._name(key)]

    def __iter__(self):
        return iter(self._activations)

    def __len__(self) -> int:
        return len(self._activations)

    def layers(self, kind: str) -> list[int]:
        """The layers cached for ``kind``, ascending."""
        return sorted(layer for (k, layer) in self._by_kind if k == kind and layer is not None)

    def stack(self, kind: str) -> torch.Tensor:
        """The cached layers of ``kind`` stacked in layer order: (layers, ...)."""
        layers = self.layers(kind)
        if not layers:
            raise KeyError(f"no layer of kind {kind!r} is cached; kinds held: {sorted({k for k, _ in self._by_kind})}.")
        return torch.stack([self[kind, layer] for layer in layers])


def _cache_filter(model: nn.Module, names, layers) -> Callable[[str], bool]:
    """A predicate on hook names from names (kinds or full names, or a predicate) and layers."""
    points = hook_points(model)
    layer_set = None if layers is None else {int(layer) for layer in layers}
    if names is not None and not callable(names):
        names = [names] if isinstance(names, str) else list(names)
        kinds = {point.kind for point in points.values()}
        unknown = [name for name in names if name not in points and name not in kinds]
        if unknown:
            raise KeyError(f"unknown hook names or kinds {unknown}; the kinds are {sorted(kinds)}.")

    def wanted(name: str) -> bool:
        point = points[name]
        if layer_set is not None and point.layer is not None and point.layer not in layer_set:
            return False
        if names is None:
            return True
        if callable(names):
            return names(name)
        return name in names or point.kind in names

    return wanted


@contextlib.contextmanager
def caching(model: nn.Module, names=None, layers: Optional[Iterable[int]] = None,
            select: Optional[Callable[[str, torch.Tensor], torch.Tensor]] = None,
            detach: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Store the chosen activations of every forward run inside the ``with`` body, in the yielded dict.

    names: kinds ("resid_post"), full names, or a predicate on names; None = every site.
    layers: block indices to keep (sites outside the blocks are kept whatever the layers).
    select(name, tensor) -> tensor: cut an activation down before storing it (frames, pooling).
    A later forward overwrites the same names; see `run_with_cache` for one forward.
    """
    wanted = _cache_filter(model, names, layers)
    store: dict[str, torch.Tensor] = {}

    def keep(activation: torch.Tensor, point: HookPoint) -> None:
        value = activation.detach() if detach else activation
        store[point.name] = select(point.name, value) if select is not None else value

    with hooks(model, [(wanted, keep)]):
        yield store


def run_with_cache(model: nn.Module, *args, names=None, layers: Optional[Iterable[int]] = None,
                   select: Optional[Callable[[str, torch.Tensor], torch.Tensor]] = None,
                   detach: bool = True, **kwargs) -> tuple[object, ActivationCache]:
    """``model(*args, **kwargs)``, and the activations of the chosen sites: (output, ActivationCache).

    See `caching` for names, layers and select. detach=False keeps the graph (for attribution).
    """
    with caching(model, names, layers, select, detach) as store:
        output = model(*args, **kwargs)
    return output, ActivationCache(store, hook_points(model))
