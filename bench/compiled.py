"""Compiled forward passes against the eager one, on one sub-model, in one run.

One HTDemucs of htdemucs_ft's sub-model shape (random weights, ``--size pretrained``)
runs one chunk (the training segment, 7.8 s) of a real excerpt from
``../shared/testdata/musdb7`` (stream 0, the mix, zero-padded to the segment as our passes
pad it), as our passes run it: eval mode, channels-last weights, self-attention through
SDPA, no grad, under autocast for bf16. The variants:

  eager     the module's own forward, under autocast for bf16 (what separation.ensemble
            ran before it held bf16 networks itself);
  passes    the module as separation.ensemble places and runs it now
            (``place_sub_model``, each pass on the heap): attention through
            separation/attention.py (SDPA, or blocked bf16 products for bf16 on a CPU
            without AMX), for bf16 the network held in bf16 (separation/bf16.py), no
            autocast, the inverse spectrogram a source at a time (separation/spectral.py),
            the pass's large blocks reused from the heap (separation/heap.py), for bf16
            the residual branches' input made contiguous once, and every 1x1 convolution
            and the time branch's wide-output ones one matrix product each
            (separation/dconv.py);
  plaindconv  ``passes`` with demucs's own residual branches (DConv) put back: what
            separation/dconv.py gains;
  inductor  ``torch.compile`` of the network between the STFT and the iSTFT (the
            magnitude in, the spectral mask and the time branch out; ``_spec``,
            ``_magnitude``, ``_mask`` and ``_ispec`` stay eager, in float32);
  freezing  the same with inductor's ``freezing`` (weights as constants, convolutions and
            linear layers prepacked for oneDNN: inductor's recommended CPU inference mode);
  whole     ``torch.compile`` of the whole forward, STFT and iSTFT included;
  onednn    the same network traced (``torch.jit.trace`` + ``torch.jit.freeze``) with
            oneDNN graph fusion on (``torch.jit.enable_onednn_fusion(True)``);
  onnxruntime  the same network exported to ONNX (``torch.onnx.export``, torch's dynamo
            exporter) and run by ONNX Runtime's CPU provider (all graph optimisations, as
            many intra-op threads as torch has); float32 only: the exported graph is the
            float32 network, and a bf16 run is reported as not built. Export and session
            are its cold cost. Needs the ``bench`` extra (onnxruntime, onnx, onnxscript).

For each variant and precision: the cold cost (building it and its first two chunks:
compile or trace, and two passes, since TorchScript optimises on the second); the steady
seconds per chunk (the median of ``--rounds`` rounds in which the variants take turns, so
load from other work on the machine falls on all of them alike); the ratio to eager's
steady time of the same precision (the median of each round's ratio); the largest
absolute difference from eager fp32's estimates (fp32 variants must stay within 1e-4); and
the cold total of a 4-minute song's passes (41 chunks per sub-model pass): the cold cost +
the other 39 chunks at the steady time, for the vocals-only request (one A sub-model
pass), and four times that for the six-track one (three A sub-models + B, each paying the
cold cost once: B's other shape counted as A's).

Inductor caches its compiled code on disk; this run compiles into a fresh, empty folder (a
worker's first start ever), unless ``--cache-dir`` names one to reuse: a second run with
the same folder gives the cold cost of a worker started again on the same machine (and an
estimate for a bag's later sub-models of one shape, where the cache is keyed by the graph,
not the weights: without ``freezing``).

    python bench/compiled.py [--size pretrained|tiny] [--precision fp32,bf16]
                             [--variants eager,passes,inductor,freezing,onednn,onnxruntime]
                             [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "musdb7"
EXCERPT = "Music Delta - 80s Rock.stem.mp4"
SONG_S = 240.0
OVERLAP = 0.25
VARIANTS = (
    "eager",
    "passes",
    "plaindconv",
    "inductor",
    "freezing",
    "whole",
    "onednn",
    "onnxruntime",
)


def network(model: Any) -> Any:
    """The part of ``model``'s (an HTDemucs) forward between its STFT and its iSTFT, as a
    module: ``(magnitude, mix) -> (spectral estimate, time-branch estimate)``, both
    de-normalised, the lines of demucs 4.1's ``HTDemucs.forward`` that lie between."""
    import torch
    from einops import rearrange

    class Network(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, mag: torch.Tensor, mix: torch.Tensor) -> tuple[Any, Any]:
            m = self.inner
            x = mag
            batch, _, freqs, frames = x.shape
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            std = x.std(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) / (1e-5 + std)
            xt = mix
            meant = xt.mean(dim=(1, 2), keepdim=True)
            stdt = xt.std(dim=(1, 2), keepdim=True)
            xt = (xt - meant) / (1e-5 + stdt)
            saved: list[Any] = []
            saved_t: list[Any] = []
            lengths: list[int] = []
            lengths_t: list[int] = []
            for idx, encode in enumerate(m.encoder):
                lengths.append(x.shape[-1])
                inject = None
                if idx < len(m.tencoder):
                    lengths_t.append(xt.shape[-1])
                    tenc = m.tencoder[idx]
                    xt = tenc(xt)
                    if not tenc.empty:
                        saved_t.append(xt)
                    else:
                        inject = xt
                x = encode(x, inject)
                if idx == 0 and m.freq_emb is not None:
                    frs = torch.arange(x.shape[-2], device=x.device)
                    emb = m.freq_emb(frs).t()[None, :, :, None].expand_as(x)
                    x = x + m.freq_emb_scale * emb
                saved.append(x)
            if m.crosstransformer:
                if m.bottom_channels:
                    f = x.shape[2]
                    x = rearrange(x, "b c f t-> b c (f t)")
                    x = m.channel_upsampler(x)
                    x = rearrange(x, "b c (f t)-> b c f t", f=f)
                    xt = m.channel_upsampler_t(xt)
                x, xt = m.crosstransformer(x, xt)
                if m.bottom_channels:
                    x = rearrange(x, "b c f t-> b c (f t)")
                    x = m.channel_downsampler(x)
                    x = rearrange(x, "b c (f t)-> b c f t", f=f)
                    xt = m.channel_downsampler_t(xt)
            for idx, decode in enumerate(m.decoder):
                skip = saved.pop(-1)
                x, pre = decode(x, skip, lengths.pop(-1))
                offset = m.depth - len(m.tdecoder)
                if idx >= offset:
                    tdec = m.tdecoder[idx - offset]
                    length_t = lengths_t.pop(-1)
                    if tdec.empty:
                        pre = pre[:, :, 0]
                        xt, _ = tdec(pre, None, length_t)
                    else:
                        skip = saved_t.pop(-1)
                        xt, _ = tdec(xt, skip, length_t)
            sources = len(m.sources)
            x = x.view(batch, sources, -1, freqs, frames)
            x = x * std[:, None] + mean[:, None]
            xt = xt.view(batch, sources, -1, mix.shape[-1])
            xt = xt * stdt[:, None] + meant[:, None]
            return x, xt

    return Network(model)


def split_forward(model: Any, net: Callable[..., Any], mix: Any) -> Any:
    """``model(mix)`` for a chunk of the training segment's length, the network part
    through ``net``: the STFT and the iSTFT in float32 outside it."""
    z = model._spec(mix)
    mag = model._magnitude(z)
    x, xt = net(mag, mix)
    zout = model._mask(z, x.float())
    return xt.float() + model._ispec(zout, mix.shape[-1])


def excerpt_chunk(samples: int) -> Any:
    """The real excerpt's mix, zero-padded (or cut) to ``samples``, as a (1, 2, n) batch."""
    import numpy as np
    import torch

    from separation import decode_audio

    audio = decode_audio(TESTDATA / EXCERPT)
    mix = audio.samples[:, :samples]
    mix = np.pad(mix, ((0, 0), (0, samples - mix.shape[1])))
    return torch.from_numpy(np.ascontiguousarray(mix))[None]


def build(variant: str, model: Any, precision: str, mix: Any) -> Callable[[], Any]:
    """The variant's pass over ``mix`` (building it compiles nothing yet, except onednn's
    trace)."""
    import torch

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    if variant == "eager":

        def run() -> Any:
            with torch.no_grad(), autocast():
                return model(mix)

        return run
    if variant in ("passes", "plaindconv"):
        from separation.ensemble import place_sub_model
        from separation.heap import activations_on_heap

        placed = place_sub_model(copy.deepcopy(model), torch.device("cpu"), precision)
        if variant == "plaindconv":
            from demucs.demucs import DConv

            for module in placed.modules():
                if isinstance(module, DConv):
                    module.__class__ = DConv
                elif isinstance(module, torch.nn.Conv1d):
                    module.__class__ = torch.nn.Conv1d

        def run() -> Any:
            with torch.no_grad(), activations_on_heap():
                return placed(mix)

        return run
    if variant in ("inductor", "freezing"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = variant == "freezing"
        module = network(model)

        def call(mag: Any, mix: Any) -> Any:
            return module(mag, mix)

        net = torch.compile(_own_code(call, f"{variant}_{precision}"))

        def run() -> Any:
            with torch.no_grad(), autocast():
                return split_forward(model, net, mix)

        return run
    if variant == "whole":
        whole = torch.compile(model)

        def run() -> Any:
            with torch.no_grad(), autocast():
                return whole(mix)

        return run
    if variant == "onednn":
        torch.jit.enable_onednn_fusion(True)
        # Autocast recorded in the trace (the casts are in the graph), not applied again.
        torch._C._jit_set_autocast_mode(False)
        with torch.no_grad(), autocast():
            z = model._spec(mix)
            mag = model._magnitude(z)
            traced = torch.jit.trace(network(model).eval(), (mag, mix), check_trace=False)
            traced = torch.jit.freeze(traced)

        def run() -> Any:
            with torch.no_grad(), autocast():
                return split_forward(model, traced, mix)

        return run
    if variant == "onnxruntime":
        return onnxruntime_run(model, precision, mix)
    raise ValueError(f"unknown variant {variant}")


def onnxruntime_run(model: Any, precision: str, mix: Any) -> Callable[[], Any]:
    """The ``onnxruntime`` variant's pass over ``mix``: :func:`network` exported to ONNX and
    run by ONNX Runtime on the CPU, the STFT and the iSTFT in torch (:func:`split_forward`).
    Exports and builds the session now (the variant's cold cost)."""
    import onnxruntime
    import torch

    if precision != "fp32":
        raise ValueError("fp32 only: the exported graph is the float32 network")
    with torch.no_grad():
        mag = model._magnitude(model._spec(mix))
        program = torch.onnx.export(network(model).eval(), (mag, mix), dynamo=True, verbose=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory(prefix="onnx-") as folder:
        # The session reads the file (graph and weights) once, as it is built.
        path = Path(folder) / "network.onnx"
        program.save(str(path))
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    inputs = [i.name for i in session.get_inputs()]

    def net(mag: Any, mix: Any) -> tuple[Any, Any]:
        x, xt = session.run(None, dict(zip(inputs, (mag.numpy(), mix.numpy()), strict=True)))
        return torch.from_numpy(x), torch.from_numpy(xt)

    def run() -> Any:
        with torch.no_grad():
            return split_forward(model, net, mix)

    return run


def _own_code(function: Any, label: str) -> Any:
    """A copy of ``function`` with a code object of its own: dynamo caches compiled code
    per code object, so variants compiled from one ``def`` could share a compilation."""
    import types

    code = function.__code__.replace(co_name=f"{function.__name__}_{label}")
    return types.FunctionType(code, function.__globals__, code.co_name, None, function.__closure__)


def chunks_per_pass(song_s: float, segment_s: float) -> int:
    """Chunks one sub-model pass runs over a song, as our passes place them."""
    from separation.ensemble import chunk_offsets

    return len(chunk_offsets(int(song_s * 44100), int(segment_s * 44100), OVERLAP))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["pretrained", "tiny"], default="pretrained")
    parser.add_argument("--precision", default="fp32,bf16", help="comma-separated")
    parser.add_argument("--variants", default="eager,inductor,freezing,onednn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=None, help="inductor's cache")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    precisions = args.precision.split(",")
    variants = args.variants.split(",")
    if variants[0] != "eager" or any(v not in VARIANTS for v in variants):
        parser.error(f"variants: eager first, then any of {VARIANTS}")

    with contextlib.ExitStack() as stack:
        cache = args.cache_dir
        if cache is None:
            cache = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inductor-")))
        before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
        try:
            return _run(args, precisions, variants)
        finally:
            if before is None:
                del os.environ["TORCHINDUCTOR_CACHE_DIR"]
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


def _run(args: argparse.Namespace, precisions: list[str], variants: list[str]) -> int:
    import torch
    from demucs.htdemucs import HTDemucs

    from separation.random_models import FOUR_SOURCES, PRETRAINED_KWARGS_4, TINY_KWARGS

    kwargs = PRETRAINED_KWARGS_4 if args.size == "pretrained" else TINY_KWARGS
    torch.manual_seed(0)
    model = HTDemucs(FOUR_SOURCES, **kwargs).eval().to(memory_format=torch.channels_last)
    # Self-attention through SDPA for the module's own forward, as separation.ensemble's
    # passes ran it before they took separation.attention (restored when done: the tests run
    # this in the process that runs every other test).
    fastpath_before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return _measure(args, precisions, variants, model)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath_before)


def _measure(
    args: argparse.Namespace, precisions: list[str], variants: list[str], model: Any
) -> int:
    import torch

    segment_s = float(model.segment)
    mix = excerpt_chunk(int(model.samplerate * segment_s))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.size} htdemucs_ft sub-model, one {segment_s:.2f} s chunk of {EXCERPT}"
    )

    runs: dict[tuple[str, str], Callable[[], Any]] = {}
    cold: dict[tuple[str, str], float] = {}
    outputs: dict[tuple[str, str], Any] = {}
    for precision in precisions:
        for variant in variants:
            key = (variant, precision)
            start = time.perf_counter()
            try:
                runs[key] = build(variant, model, precision, mix)
                outputs[key] = runs[key]().float()
                # TorchScript's profiling executor optimises (and fuses) on the 2nd call.
                outputs[key] = runs[key]().float()
            except Exception as exc:  # a variant that cannot run is reported, not fatal
                print(f"{variant} {precision}: failed: {type(exc).__name__}: {exc}"[:400])
                runs.pop(key, None)
                continue
            cold[key] = time.perf_counter() - start
            print(f"{variant} {precision}: cold {cold[key]:.1f} s", flush=True)

    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, run in list(runs.items()):
            start = time.perf_counter()
            try:
                run()
            except Exception as exc:  # as above
                print(f"{key[0]} {key[1]}: failed: {type(exc).__name__}: {exc}"[:400])
                del runs[key]
                continue
            times[key].append(time.perf_counter() - start)
    reference = outputs.get(("eager", "fp32"))

    chunks = chunks_per_pass(SONG_S, segment_s)
    print()
    print(
        f"{args.rounds} rounds, variants in turn; a {SONG_S / 60:.0f}-minute song: "
        f"{chunks} chunks per sub-model pass; vocals = 1 pass, six-track = 4 passes"
    )
    print(
        "| variant | precision | cold (s) | steady (s/chunk) | x eager | max abs diff "
        "vs eager fp32 | vocals cold (s) | x eager | six-track cold (s) | x eager |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    figures = []
    for key in runs:
        variant, precision = key
        eager = ("eager", precision)
        steady = statistics.median(times[key])
        ratio = statistics.median(t / e for t, e in zip(times[key], times[eager], strict=True))
        diff = float((outputs[key] - reference).abs().max()) if reference is not None else None
        # Eager's steady time as the unit: each variant's song figure in eager chunks.
        eager_steady = statistics.median(times[eager])

        def song(passes: int, key: tuple[str, str] = key, steady: float = steady) -> float:
            return passes * (cold[key] + (chunks - 2) * steady)

        vocals, six = song(1), song(4)
        eager_vocals = cold[eager] + (chunks - 2) * eager_steady
        figures.append(
            {
                "variant": variant,
                "precision": precision,
                "cold_s": cold[key],
                "steady_s": steady,
                "ratio": ratio,
                "max_abs_diff": diff,
                "vocals_cold_s": vocals,
                "six_cold_s": six,
                "vocals_ratio": vocals / eager_vocals,
                "times": times[key],
            }
        )
        print(
            f"| {variant} | {precision} | {cold[key]:.1f} | {steady:.2f} | {ratio:.3f} | "
            f"{'' if diff is None else f'{diff:.2e}'} | {vocals:.0f} | "
            f"{vocals / eager_vocals:.3f} | {six:.0f} | {six / (4 * eager_vocals):.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
