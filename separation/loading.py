"""Building a model whose every weight a checkpoint then sets, without first drawing
random weights for it (what Hugging Face transformers' ``no_init_weights`` does).

demucs's ``load_model`` builds the module (``HTDemucs(**kwargs)``), whose layers fill
their parameters through :mod:`torch.nn.init` (``kaiming_uniform_``, ``uniform_``,
``xavier_uniform_``, ...) and whose constructor then rescales every convolution's random
weights by their standard deviation (demucs's ``rescale_module``), and then loads the
checkpoint over all of them: work thrown away, on the published shape more of it in the
rescaling than in the draw.

torch is imported only when the context is entered, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator
from typing import Any

# The functions of torch.nn.init that fill a tensor: the in-place ones and their
# deprecated aliases (each alias holds the in-place function it wraps, so it is patched
# on its own). Helpers such as calculate_gain or _calculate_fan_in_and_fan_out are left.
INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
    "uniform",
    "normal",
    "constant",
    "eye",
    "dirac",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "sparse",
)

# Where torch holds them: torch.nn.init, and the layer modules that bind some by name at
# import (``from torch.nn.init import xavier_uniform_`` in activation.py, where
# MultiheadAttention lives, and in transformer.py), which patching torch.nn.init alone
# would miss. The list transformers patches; a module missing from a torch version is
# skipped.
PATCHED_MODULES = (
    "torch.nn.init",
    "torch.nn.modules.activation",
    "torch.nn.modules.transformer",
    "torch.nn.modules.linear",
    "torch.nn.modules.loss",
    "torch.nn.modules.batchnorm",
    "torch.nn.modules.conv",
    "torch.nn.modules.normalization",
    "torch.nn.modules.rnn",
    "torch.nn.modules.sparse",
)

# demucs's models rescale their freshly drawn convolution weights in __init__ with
# ``rescale_module``, which each model module imported by name.
DEMUCS_RESCALING_MODULES = ("demucs.demucs", "demucs.hdemucs", "demucs.htdemucs")

_lock = threading.Lock()
_depth = 0  # contexts open now, over all threads
_replaced: list[tuple[Any, str, Any]] = []  # (module, attribute, original function)


def _left_as_it_is(tensor: Any, *args: Any, **kwargs: Any) -> Any:
    """An init function that fills nothing and returns its tensor, as the real ones do."""
    return tensor


def _not_rescaled(module: Any, reference: float) -> None:
    """demucs's ``rescale_module``, doing nothing: the weights it would scale are all
    about to be loaded."""


def _patch() -> None:
    init = importlib.import_module("torch.nn.init")
    originals = {name: getattr(init, name) for name in INIT_FUNCTIONS if hasattr(init, name)}
    for module_name in PATCHED_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name, original in originals.items():
            # Only where the attribute is torch's own function: a name a module defines
            # for itself (torch.nn.modules.sparse's classes, say) is not ours to replace.
            if getattr(module, name, None) is original:
                _replaced.append((module, name, original))
                setattr(module, name, _left_as_it_is)
    try:
        modules: list[Any] = [importlib.import_module(name) for name in DEMUCS_RESCALING_MODULES]
    except ImportError:  # no demucs: nothing of it to skip
        return
    rescale_module = modules[0].rescale_module  # demucs.demucs defines it
    for module in modules:
        if getattr(module, "rescale_module", None) is rescale_module:
            _replaced.append((module, "rescale_module", rescale_module))
            module.rescale_module = _not_rescaled


def _restore() -> None:
    while _replaced:
        module, name, original = _replaced.pop()
        setattr(module, name, original)


@contextlib.contextmanager
def skip_random_init() -> Iterator[None]:
    """Within the context, torch's weight initialisers fill nothing: a module built here
    keeps its parameters as ``torch.empty`` left them (arbitrary values), for a caller
    that then loads every one of them from a checkpoint.

    Every function of :mod:`torch.nn.init` that fills a tensor (``INIT_FUNCTIONS``) is
    replaced by one that returns its tensor untouched, in ``torch.nn.init`` and in the
    torch layer modules that imported it by name (``PATCHED_MODULES``); so is demucs's
    ``rescale_module``, by which its models' constructors rescale those random weights
    (in ``DEMUCS_RESCALING_MODULES``, where demucs is installed). On leaving the
    context, also by an exception, the very same function objects are put back.

    The effect is process-wide, not per thread: while a context is open, any thread that
    builds a torch module gets unfilled parameters (and ``torch.nn.init.normal_(t)``
    anywhere leaves ``t`` as it was). Use it only around building a model whose weights
    are all loaded next. Contexts nest and may be open in several threads at once: a
    lock-guarded count patches on the first entry and restores on the last exit.
    :class:`separation.EnsembleSeparator` opens it only while loading a sub-model, which
    it does under its own lock.

    Yields:
        Nothing; the initialisers are skipped until the context closes.
    """
    global _depth
    with _lock:
        if _depth == 0:
            try:
                _patch()
            except BaseException:
                _restore()
                raise
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _restore()
