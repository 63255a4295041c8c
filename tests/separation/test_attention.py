"""The passes' attention (separation/attention.py) and the bf16 network (separation/bf16.py):
the same results as PyTorch's own modules, within each precision's rounding."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from demucs.htdemucs import HTDemucs
from torch import nn
from torch.nn import functional as F

from separation.attention import blocked_attention, cpu_bf16_attention, use_pass_attention
from separation.bf16 import run_network_in_bf16, runs_in_bf16
from separation.random_models import FOUR_SOURCES, TINY_KWARGS
from tests.separation.conftest import audio_of
from tests.support.audio import music_like
from tests.support.separators import make_separator


def _snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    noise = (reference.double() - estimate.double()).pow(2).sum()
    return float(10 * torch.log10(reference.double().pow(2).sum() / noise))


def _attention_pair(embed: int = 64, heads: int = 4) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(embed, heads, batch_first=True).eval()
    switched = copy.deepcopy(reference)
    assert use_pass_attention(switched) == 1
    assert use_pass_attention(switched) == 0, "an already switched module is left as it is"
    return reference, switched


def test_pass_attention_equals_multihead_attention_in_float32() -> None:
    reference, switched = _attention_pair()
    assert switched.state_dict().keys() == reference.state_dict().keys()
    x, y, z = (torch.randn(2, n, 64) for n in (300, 170, 170))
    with torch.no_grad():
        for args in ((x, x, x), (x, y, y), (x, y, z)):
            want, _ = reference(*args, need_weights=False)
            got, weights = switched(*args, need_weights=False)
            assert weights is None
            torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


def test_calls_with_masks_or_weights_run_the_original_forward() -> None:
    reference, switched = _attention_pair()
    x = torch.randn(1, 50, 64)
    padding = torch.zeros(1, 50, dtype=torch.bool)
    padding[:, 40:] = True
    causal = torch.triu(torch.ones(50, 50, dtype=torch.bool), diagonal=1)
    with torch.no_grad():
        want_out, want_weights = reference(x, x, x, key_padding_mask=padding)
        got_out, got_weights = switched(x, x, x, key_padding_mask=padding)
        assert got_weights is not None and want_weights is not None
        torch.testing.assert_close(got_out, want_out)
        torch.testing.assert_close(got_weights, want_weights)
        # Each mask alone, without weights: a kernel that ignored it would differ.
        for masks in ({"key_padding_mask": padding}, {"attn_mask": causal}):
            want, _ = reference(x, x, x, need_weights=False, **masks)
            got, _ = switched(x, x, x, need_weights=False, **masks)
            unmasked, _ = switched(x, x, x, need_weights=False)
            torch.testing.assert_close(got, want)
            assert not torch.allclose(unmasked, want)


@pytest.mark.parametrize("queries", [700, 512, 3])
def test_blocked_attention_equals_sdpa(queries: int) -> None:
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 8, queries, 64), torch.randn(2, 8, 333, 64), torch.randn(2, 8, 333, 48)
    want = F.scaled_dot_product_attention(q, k, v)
    # Blocks of 256: a short last block (700 = 2 x 256 + 188), whole blocks, less than one.
    torch.testing.assert_close(blocked_attention(q, k, v), want, rtol=0, atol=1e-5)
    got_bf16 = blocked_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert got_bf16.dtype == torch.bfloat16
    # bf16's 8-bit mantissa: measured 45.5 dB here; SDPA's own bf16 kernel, which keeps its
    # scores in float32, gives 49.
    assert _snr_db(want, got_bf16.float()) > 35.0


def _tiny_htdemucs() -> HTDemucs:
    torch.manual_seed(2)
    return HTDemucs(FOUR_SOURCES, **TINY_KWARGS).eval()


def test_bf16_network_keeps_float32_at_its_edges_and_stays_near_float32() -> None:
    model = _tiny_htdemucs()
    converted = copy.deepcopy(model)
    assert run_network_in_bf16(converted) and runs_in_bf16(converted)
    assert {p.dtype for p in converted.parameters()} == {torch.bfloat16}
    assert not runs_in_bf16(model)
    mix = torch.from_numpy(music_like(7.0)).unsqueeze(0)  # within one training segment
    with torch.no_grad():
        want = model(mix)
        got = converted(mix)
    assert got.dtype == torch.float32 and got.shape == want.shape
    # Measured 51.7 dB here, as autocast's 51.8.
    assert _snr_db(want, got) > 40.0
    assert not run_network_in_bf16(nn.Linear(2, 2)), "only an HTDemucs is converted"


def test_cpu_bf16_separator_holds_its_networks_in_bf16(model_repo: Path) -> None:
    separator = make_separator(model_repo, precision="bf16")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        separator.separate(audio_of(music_like(2.0)), ["vocals"])
    ops = {event.key for event in profile.key_averages()}
    # This CPU's kernel: SDPA where it has AMX, blocked products elsewhere.
    sdpa = cpu_bf16_attention() == "sdpa"
    assert ("aten::scaled_dot_product_attention" in ops) is sdpa
    assert ("aten::_softmax" in ops) is not sdpa, "the blocked kernel's own softmax"
    assert "aten::_native_multi_head_attention" not in ops
    loaded = separator._model("htdemucs_ft")
    (sub_model,) = (loaded.sub_model(i) for i in loaded.contributors("vocals"))
    assert runs_in_bf16(sub_model)
    assert {p.dtype for p in sub_model.parameters()} == {torch.bfloat16}
