"""Sub-models are built without the random weights their checkpoint overwrites
(separation/loading.py), and come out the same as demucs loads them."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

import demucs.demucs
import demucs.htdemucs
import pytest
import torch
from demucs.pretrained import get_model

import separation.loading
from separation.ensemble import place_sub_model
from separation.loading import skip_random_init
from separation.random_models import write_model_repo
from tests.separation.conftest import audio_of
from tests.support.separators import make_separator

TORCH_INIT = torch.nn.init


def _module(name: str) -> Any:
    return importlib.import_module(name)


def _init_functions() -> dict[tuple[str, str], Any]:
    """Every attribute the context patches, as it is now, by (module, name)."""
    found = {}
    for module_name in separation.loading.PATCHED_MODULES:
        module = _module(module_name)
        for name in separation.loading.INIT_FUNCTIONS:
            if hasattr(module, name):
                found[module_name, name] = getattr(module, name)
    for module_name in separation.loading.DEMUCS_RESCALING_MODULES:
        found[module_name, "rescale_module"] = _module(module_name).rescale_module
    return found


def _assert_same_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for key, value in ours_state.items():
        assert torch.equal(value, theirs_state[key]), key
    ours_buffers, theirs_buffers = dict(ours.named_buffers()), dict(theirs.named_buffers())
    assert list(ours_buffers) == list(theirs_buffers)
    for key, value in ours_buffers.items():
        assert torch.equal(value, theirs_buffers[key]), key


def test_initialisers_fill_nothing_inside_and_are_restored_after() -> None:
    before = _init_functions()
    # MultiheadAttention's initialisers are bound by name in torch.nn.modules.activation.
    assert ("torch.nn.modules.activation", "xavier_uniform_") in before
    assert before["demucs.htdemucs", "rescale_module"] is demucs.demucs.rescale_module
    tensor = torch.full((4, 5), 7.0)
    with skip_random_init():
        assert TORCH_INIT.normal_(tensor) is tensor
        TORCH_INIT.kaiming_uniform_(tensor, a=5**0.5)
        TORCH_INIT.zeros_(tensor)
        layer = torch.nn.Linear(5, 4)
        layer.weight.data.fill_(3.0)
        layer.reset_parameters()
        attention = torch.nn.MultiheadAttention(4, 2)
        attention.in_proj_weight.data.fill_(3.0)
        attention._reset_parameters()
        # demucs's constructors rescale the convolutions' random weights.
        conv = torch.nn.Conv1d(4, 4, 3)
        conv.weight.data.fill_(3.0)
        convolutions = torch.nn.Sequential(conv)
        demucs.htdemucs.rescale_module(convolutions, reference=0.1)
        assert all(getattr(_module(m), n) is not f for (m, n), f in before.items())
    assert torch.equal(tensor, torch.full((4, 5), 7.0))
    assert torch.equal(layer.weight, torch.full((4, 5), 3.0))
    assert torch.equal(attention.in_proj_weight, torch.full((12, 4), 3.0))
    assert torch.equal(conv.weight, torch.full((4, 4, 3), 3.0))
    after = _init_functions()
    assert all(after[key] is before[key] for key in before)
    TORCH_INIT.normal_(tensor)
    assert not torch.equal(tensor, torch.full((4, 5), 7.0))


def test_initialisers_are_restored_after_an_exception_and_nested_contexts() -> None:
    before = _init_functions()
    with pytest.raises(RuntimeError, match="load failed"), skip_random_init():
        with skip_random_init():
            pass
        # Still skipped after the inner context closed: the outer one is open.
        assert TORCH_INIT.uniform_ is not before["torch.nn.init", "uniform_"]
        raise RuntimeError("load failed")
    assert _init_functions() == before


def test_two_threads_restore_the_initialisers_only_when_both_have_left() -> None:
    before = _init_functions()
    first_inside, second_inside, first_left = (
        threading.Event(),
        threading.Event(),
        threading.Event(),
    )
    seen: list[bool] = []

    def first() -> None:
        with skip_random_init():
            first_inside.set()
            second_inside.wait(10)
        first_left.set()

    def second() -> None:
        first_inside.wait(10)
        with skip_random_init():
            second_inside.set()
            first_left.wait(10)
            seen.append(TORCH_INIT.normal_ is before["torch.nn.init", "normal_"])

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert first_left.is_set()
    assert seen == [False]  # the first thread's exit left the second's skip in place
    assert _init_functions() == before


def test_the_separator_loads_sub_models_equal_to_demucs_without_drawing_weights(
    model_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Count what torch's initialisers would fill during the separator's loads.
    filled: list[tuple[int | str, ...]] = []
    real_uniform, real_kaiming = TORCH_INIT.uniform_, TORCH_INIT.kaiming_uniform_

    def counted_uniform(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        filled.append(tuple(tensor.shape))
        return real_uniform(tensor, *args, **kwargs)

    def counted_kaiming(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        filled.append(tuple(tensor.shape))
        return real_kaiming(tensor, *args, **kwargs)

    real_rescale = demucs.demucs.rescale_module

    def counted_rescale(module: torch.nn.Module, reference: float) -> None:
        filled.append(("rescaled",))
        real_rescale(module, reference)

    monkeypatch.setattr(TORCH_INIT, "uniform_", counted_uniform)
    monkeypatch.setattr(TORCH_INIT, "kaiming_uniform_", counted_kaiming)
    for module_name in separation.loading.DEMUCS_RESCALING_MODULES:
        monkeypatch.setattr(_module(module_name), "rescale_module", counted_rescale)

    separator = make_separator(model_repo)
    lazily = separator._model("htdemucs_ft")  # the bag, each sub-model on first need
    ours = [lazily.sub_model(i) for i in range(len(lazily.signatures))]
    whole = separator._load_whole("htdemucs_ft", model_repo)  # demucs's get_model
    ours_whole = [whole.sub_model(i) for i in range(len(whole.signatures))]
    assert filled == []

    # The probe does see a plain load's initialisers, so the check above can fail.
    bag = get_model("htdemucs_ft", repo=model_repo)
    assert ("rescaled",) in filled
    assert len(filled) > 1
    theirs = [place_sub_model(sub, separator.device, separator.precision) for sub in bag.models]
    for sub_models in (ours, ours_whole):
        assert len(sub_models) == len(theirs) == 4
        for our_sub_model, their_sub_model in zip(sub_models, theirs, strict=True):
            _assert_same_weights(our_sub_model, their_sub_model)


def _corrupt(path: Path, at: float) -> None:
    """Change one byte of ``path``, ``at`` of the way through it."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_verified_load_is_demucs_load(tmp_path: Path) -> None:
    from demucs.repo import LocalRepo

    repo = LocalRepo(write_model_repo(tmp_path / "models"))
    signature = next(sig for sig, path in repo.list_model().items() if "-" in path.stem)
    ours = separation.loading.load_verified(repo, signature)
    theirs = repo.get_model(signature)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], tensor), name


@pytest.mark.parametrize("at", [0.5, 0.999], ids=["in-the-weights", "near-the-end"])
def test_a_changed_package_is_refused_for_its_checksum(tmp_path: Path, at: float) -> None:
    from demucs.repo import LocalRepo, ModelLoadingError

    root = write_model_repo(tmp_path / "models")
    repo = LocalRepo(root)
    signature, path = next((s, p) for s, p in repo.list_model().items() if "-" in p.stem)
    _corrupt(path, at)
    # Whether the load itself fails or not, the mismatch is what is reported.
    with pytest.raises(ModelLoadingError, match="Invalid checksum"):
        separation.loading.load_verified(repo, signature)


def test_an_unknown_signature_gets_demucs_error(tmp_path: Path) -> None:
    from demucs.repo import LocalRepo, ModelLoadingError

    repo = LocalRepo(write_model_repo(tmp_path / "models"))
    with pytest.raises(ModelLoadingError, match="Could not find"):
        separation.loading.load_verified(repo, "f00dfeed")


def test_the_separator_refuses_a_changed_sub_model(tmp_path: Path) -> None:
    from demucs.repo import LocalRepo

    from separation import ModelUnavailableError
    from tests.support.audio import music_like

    root = write_model_repo(tmp_path / "models")
    for path in LocalRepo(root).list_model().values():
        _corrupt(path, 0.5)
    separator = make_separator(root)
    with pytest.raises(ModelUnavailableError, match="checksum"):
        separator.separate(audio_of(music_like(2.0, seed=3)), ["vocals"])
