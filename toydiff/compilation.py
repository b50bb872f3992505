"""``torch.compile`` where it works, the eager model where it does not.

    forward = compile_or_eager(model)     # call it like the model; attributes are the model's
    loss = objective(forward, batch)      # the first call compiles (tens of seconds on a CPU)
    forward.compiled                      # False if compilation failed and the model runs eagerly

Compilation turns a model's forward (and, through AOTAutograd, its backward) into fused kernels: on a
small DiT, whose step is dominated by many small elementwise operations (LayerNorm, modulation, GELU,
residual adds), fusing them is where the time goes. It needs a C++ compiler on a CPU (Triton on a GPU)
and a PyTorch build that supports it. Where any of that is missing, training must still run: the
first call is tried compiled, and if the *compiler* fails (not the model: a wrong input still raises
its own error) a warning says so and every call from then on is eager. A damaged compile cache is one
such failure: a run stopped while it compiled can leave an empty kernel library in PyTorch's cache
(/tmp/torchinductor_<user>), and every later compile of that kernel fails to load it ("file too short");
``rm -rf /tmp/torchinductor_$USER`` clears the cache. The weights are the same
tensors either way, so checkpoints, EMA and the optimizer never see the difference.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, TypeVar

import torch
from torch import nn

T = TypeVar("T")


def compiler_errors() -> tuple[type, ...]:
    """Exceptions that mean "this machine cannot compile", as opposed to an error of the model itself."""
    errors: list[type] = []
    try:
        from torch._dynamo import exc as dynamo_exc
        errors += [dynamo_exc.BackendCompilerFailed, dynamo_exc.InvalidBackend]
    except ImportError:  # a PyTorch without dynamo: compile_or_eager never gets that far
        pass
    try:
        from torch._inductor import exc as inductor_exc
        errors += [inductor_exc.InvalidCxxCompiler, inductor_exc.CppCompileError]
    except ImportError:
        pass
    return tuple(errors) or (RuntimeError,)


class CompiledOrEager:
    """Calls the compiled model; falls back to the eager one the first time compilation fails.

    Attribute access (``.training``, ``.null_label``, ``.parameters()`` …) goes to the eager model,
    whose parameters the compiled one shares.
    """

    def __init__(self, model: nn.Module, **compile_options):
        self.model = model
        self.compiled = hasattr(torch, "compile")
        self._forward = torch.compile(model, **compile_options) if self.compiled else model
        if not self.compiled:
            warnings.warn("this PyTorch has no torch.compile: the model runs eagerly", stacklevel=2)

    def __call__(self, *args, **kwargs):
        if not self.compiled:
            return self.model(*args, **kwargs)
        try:
            return self._forward(*args, **kwargs)
        except compiler_errors() as error:
            self.fall_back(error)
            return self.model(*args, **kwargs)

    def fall_back(self, error: Exception) -> None:
        """Say why compiling failed and run eagerly from now on. with_eager_fallback calls this too when the
        *backward* fails to compile (AOTAutograd compiles it at the first ``loss.backward()``, outside this
        wrapper), then redoes that step eagerly."""
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        warnings.warn(f"torch.compile failed on this machine ({type(error).__name__}: {first_line[:200]}); "
                      "the model runs eagerly from now on", stacklevel=3)
        self.compiled, self._forward = False, self.model

    def __getattr__(self, name):
        # Only reached for names this wrapper does not have itself.
        return getattr(self.__dict__["model"], name)


def with_eager_fallback(forward, step: Callable[[], T], before_retry: Optional[Callable[[], None]] = None) -> T:
    """``step()``, which calls ``forward`` and runs the backward of what it returned. AOTAutograd compiles that
    backward at the first ``loss.backward()``, outside CompiledOrEager's own fallback: where it fails to
    compile, ``forward`` falls back to eager (with the warning) and ``step()`` runs again, after
    ``before_retry()`` (to restore what the failed try drew, say). Anything else ``step()`` raises propagates.
    Not for a step of several processes (DDP): one process redoing a step the others do not would leave
    their collectives out of step; toydiff.training.train lets the error stop such a run instead."""
    compiled = isinstance(forward, CompiledOrEager) and forward.compiled
    try:
        return step()
    except compiler_errors() as error:
        if not compiled:
            raise
        failure = error
        failure.__traceback__ = None  # its frames hold the failed try's activations: free them before the retry
    forward.fall_back(failure)
    if before_retry is not None:
        before_retry()
    return step()


def compile_or_eager(model: nn.Module, enabled: bool = True, **compile_options):
    """``model`` wrapped in CompiledOrEager when ``enabled``, else ``model`` itself."""
    return CompiledOrEager(model, **compile_options) if enabled else model
