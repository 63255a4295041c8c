"""Loading a sub-model from a local folder at less cost: without first drawing random
weights for it (what Hugging Face transformers' ``no_init_weights`` does), and with its
file's checksum verified beside the load instead of before it.

demucs's ``load_model`` builds the module (``HTDemucs(**kwargs)``), whose layers fill
their parameters through :mod:`torch.nn.init` (``kaiming_uniform_``, ``uniform_``,
``xavier_uniform_``, ...) and whose constructor then rescales every convolution's random
weights by their standard deviation (demucs's ``rescale_module``), and then loads the
checkpoint over all of them: work thrown away, on the published shape more of it in the
rescaling than in the draw.

demucs's ``LocalRepo.get_model`` reads each package whole to hash it (sha256, its prefix
in the file name) before it reads it again to load it: 0.2 of a published sub-model's
0.49 s load on this project's 2-core machine, on one core while the other waits.
:func:`load_verified` hashes on a thread of its own while the load runs (hashlib and file
reads release the GIL), and refuses the model when the hash does not match, as demucs does.

torch is imported only when the context is entered, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


def load_verified(repo: Any, signature: str) -> Any:
    """A sub-model from demucs's local folder, as ``repo.get_model(signature)`` loads it,
    its checksum verified on another thread while it loads.

    Args:
        repo: a ``demucs.repo.LocalRepo``.
        signature: the sub-model's signature (its file is ``<signature>[-<checksum>].th``).

    Returns:
        The loaded demucs model (call it within :func:`skip_random_init` to skip the
        random weights as well).

    Raises:
        demucs.repo.ModelLoadingError: no file for ``signature``, or its content does not
            hash to the checksum in its name (raised even when the load failed too).
        Exception: whatever demucs's ``load_model`` raises for an unreadable package.
    """
    from demucs.repo import check_checksum
    from demucs.states import load_model

    if not repo.has_model(signature):
        return repo.get_model(signature)  # demucs's own error
    path = repo.list_model()[signature]
    stem = path.stem
    checksum = stem.rsplit("-", 1)[1] if "-" in stem else None
    if checksum is None:
        return load_model(path)
    with ThreadPoolExecutor(1, thread_name_prefix="checksum") as pool:
        verified = pool.submit(check_checksum, path, checksum)
        try:
            return load_model(path)
        finally:
            verified.result()  # a mismatch is the cause to report, whatever the load did
