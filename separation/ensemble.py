"""The two-model Demucs ensemble: model A (4-source bag) and model B (6-source).

The separator is the facade that loads models, plans passes and streams the song; how the
two models' estimates combine is the strategy's (:mod:`separation.strategies`: its plan
names the estimates a pick needs, its combiner turns them into the picked sources).
Only the sub-models the requested tracks need are run, chunked and cross-faded as demucs's
``apply_model`` does, several chunks per forward pass (``batch_size``), so progress can be
reported and a job cancelled between chunks, and only the needed sources are accumulated.
The network runs in the separator's ``precision`` (bf16 on CPU: the network held in bf16,
:mod:`separation.bf16`; elsewhere autocast); the STFT, iSTFT and the cross-fade stay
float32. Attention runs through :mod:`separation.attention`. Source estimates are cached on
disk per (song, model, settings, source).

The song streams through: the sub-models advance in lockstep, and each span of the tracks
goes to its sink (memory, or raw files for :meth:`EnsembleSeparator.separate_to_files`) as
soon as every sub-model has passed it, so beyond the song itself memory does not grow with
its length.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import torch
import yaml

from separation import strategies
from separation.attention import use_pass_attention
from separation.audio import SAMPLERATE, Audio, RawTrack, Samples, SpooledSamples
from separation.bf16 import run_network_in_bf16, runs_in_bf16
from separation.cache import CacheReader, CacheWriter, SourceCache, audio_digest
from separation.config import Ensemble, SeparatorConfig, check_precision
from separation.cpu import has_native_bf16
from separation.dconv import use_lean_dconv, use_pointwise_products, use_unfolded_products
from separation.errors import ModelUnavailableError, SeparationCancelled
from separation.fused import use_fused_layers
from separation.heap import activations_on_heap
from separation.mixing import assemble_tracks
from separation.spectral import use_lean_ispec
from separation.tracks import plan_tracks

logger = logging.getLogger(__name__)

# demucs's STFT front end needs some samples; shorter songs are zero-padded, then trimmed.
_MIN_SAMPLES = SAMPLERATE
# Bump when the stored estimates would change for the same song, models and settings, or
# their layout on disk (v2: frame-interleaved, so a song streams in and out; v3: no last
# chunk that adds nothing of its own, see chunk_offsets).
_CACHE_FORMAT = "v3"
# Frames per block while the song's statistics are summed (about 3 s).
_STATS_BLOCK = 1 << 17
# Frames per span handed on when every estimate comes from the cache (about 10 s).
_FLUSH_FRAMES = 10 * SAMPLERATE

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# CPU: batches of 2, 4 and 8 chunks measured no faster than 1 on a 2-core machine (tiny and
# published shapes, 30 s of music), and each extra chunk holds about 0.5 GB more.
_CPU_BATCH_SIZE = 1
# CUDA: memory one chunk's forward pass needs, per input sample. A conservative constant:
# about 3x the growth measured per extra chunk of the published htdemucs shapes in float32
# on CPU (~1.4 kB/sample, ~0.47 GB per 7.8 s chunk), leaving room for cuDNN/cuFFT
# workspaces and allocator slack; autocast only lowers the real figure.
_ACTIVATION_BYTES_PER_SAMPLE = 4096
# Share of the free device memory batches may fill (the rest: allocator slack, cuFFT/cuDNN
# workspaces, the accumulators of other threads).
_DEVICE_MEMORY_SHARE = 0.5
_MAX_BATCH_SIZE = 32


def resolve_device(device: str) -> torch.device:
    """The torch device for a ``DEMIX_DEVICE`` value; ``auto`` prefers cuda, then mps."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def resolve_precision(
    precision: str, device: torch.device, *, native_cpu_bf16: bool | None = None
) -> str:
    """The precision a ``DEMIX_PRECISION`` value means on ``device``.

    ``auto`` is ``bf16`` where the device computes it natively: a CUDA device that supports
    it, or a CPU with AVX-512 BF16 or AMX (:func:`separation.cpu.has_native_bf16`); else
    ``fp32``, since bf16 emulated through fp32 is slower than fp32 itself (MPS included:
    not measured there).

    Args:
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        device: the device the network runs on.
        native_cpu_bf16: whether the CPU computes bf16 natively; None asks this machine's.

    Raises:
        ValueError: an unknown precision, fp16 on CPU, or bf16 on a CUDA device without it.
    """
    check_precision(precision, device.type)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if device.type == "cpu":
            native = has_native_bf16() if native_cpu_bf16 is None else native_cpu_bf16
            return "bf16" if native else "fp32"
        return "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16 is not supported on {device}; use fp16 or fp32")
    return precision


def place_sub_model(sub_model: Any, device: torch.device, precision: str) -> Any:
    """Put a loaded sub-model on ``device``, in eval mode, in the layout and precision our
    passes run it in (the benchmarks place theirs with this too).

    Args:
        sub_model: a loaded demucs model (an HTDemucs, or another kind, left in its class).
        device: where it runs.
        precision: ``"fp32"`` or ``"bf16"`` (as :func:`resolve_precision` gives it); bf16
            on CPU holds an HTDemucs's network in bf16, elsewhere autocast does it.

    Returns:
        ``sub_model``, changed in place.
    """
    sub_model.to(device)
    if device.type == "cpu":
        # oneDNN's 2-D convolutions skip a layout reorder with channels-last weights:
        # 3-6 % faster per forward pass on the published shapes, outputs equal within
        # 5e-7. Not measured on a GPU yet, so CUDA keeps the default layout.
        sub_model.to(memory_format=torch.channels_last)
        if precision == "bf16":
            # Not measured on a GPU, so CUDA keeps autocast (its figures were taken so).
            run_network_in_bf16(sub_model)
            # 0.95x the time per chunk on the published shape, estimates bit-equal; in
            # fp32 the same change measured within noise, so fp32 keeps demucs's.
            use_lean_dconv(sub_model)
            # Gates as two half convolutions, GELUs in their products (separation/fused.py).
            use_fused_layers(sub_model)
        # 1-D convolutions as products that write their outputs channels-first
        # (separation/dconv.py): 0.96x a chunk each in bf16; together 0.96x in fp32 too.
        use_pointwise_products(sub_model)
        use_unfolded_products(sub_model)
        # A pass's largest transient; CUDA sizes its batches by a per-sample activation
        # size measured without this, so it keeps demucs's one-call inverse.
        use_lean_ispec(sub_model)
    use_pass_attention(sub_model)
    sub_model.eval()
    return sub_model


def _package_sources(model_repo: Any, signature: str) -> list[str] | None:
    """The sources a sub-model's package names, read without building the model (its
    tensors stay on disk, memory-mapped): 0.02 s where loading it takes about 0.6 s. None
    where the package cannot be read so or does not name them; the caller then builds it,
    and reports what is wrong with it."""
    try:
        path = model_repo._models[signature]  # demucs's LocalRepo: signature -> file
        package = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        sources = package["kwargs"]["sources"]
    except Exception:  # any failure: build the model, which says what is wrong
        return None
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        return None
    return list(sources)


@dataclass
class _LoadedModel:
    """A model as a bag: its sub-models' signatures and per-source weights, and the
    sub-models loaded so far (each on first need: a pick loads only what it runs)."""

    name: str
    sources: list[str]
    signatures: list[str]
    weights: list[list[float]]
    load_sub_model: Callable[[int], Any]  # a demucs HTDemucs/HDemucs/Demucs module
    sub_models: dict[int, Any] = field(default_factory=dict)

    def contributors(self, source: str) -> list[int]:
        """Indices of the sub-models with a non-zero weight for ``source``."""
        k = self.sources.index(source)
        return [i for i, row in enumerate(self.weights) if row[k] != 0.0]

    def sub_model(self, index: int) -> Any:
        """Sub-model ``index``, loaded now if it was not yet."""
        loaded = self.sub_models.get(index)
        if loaded is None:
            loaded = self.load_sub_model(index)
            self.sub_models[index] = loaded
        return loaded


ProgressCallback = Callable[[float], None]
CancelCheck = Callable[[], bool]


class EnsembleSeparator:
    """Separates songs with the two-model ensemble; one instance per process.

    Models load lazily, once per instance, on first need. Calls are serialised by a lock,
    so one instance can be shared by worker threads (``asyncio.to_thread``).

    Attributes:
        config: the configuration.
        device: the torch device models run on.
        precision: the network's precision on that device: ``fp32``, ``bf16`` or ``fp16``.
        model_passes: sub-model passes run so far (a cache hit runs none).
        cache: the source cache, or None.
    """

    def __init__(self, config: SeparatorConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.model_passes = 0
        self.cache = (
            SourceCache(config.cache_dir, config.cache_max_bytes)
            if config.cache_dir is not None and config.cache_max_bytes > 0
            else None
        )
        self._models: dict[str, _LoadedModel] = {}
        self._identities: dict[str, str] = {}
        self._usable_by_ensemble: dict[Ensemble, frozenset[tuple[str, str]]] = {}
        self._lock = threading.RLock()

    @property
    def loaded_models(self) -> tuple[str, ...]:
        """Names of the models loaded so far."""
        return tuple(self._models)

    # -- public API ------------------------------------------------------------------

    def separate(
        self,
        audio: Audio,
        stems: Iterable[str],
        *,
        ensemble: Ensemble | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> dict[str, np.ndarray]:
        """Separate ``audio`` into the tracks of DESIGN.md's table for the pick ``stems``,
        in memory (see :meth:`separate_to_files` for long songs).

        Args:
            audio: the decoded song.
            stems: the picked sources (see :func:`separation.plan_tracks`).
            ensemble: how the two models' estimates combine (:mod:`separation.strategies`);
                None: the configuration's.
            progress: called with the fraction done (0..1) after each chunk (the chunks of
                one batch report together, when it is done).
            should_cancel: polled before each chunk (a batch is gathered chunk by chunk,
                before its forward pass); True stops the work.

        Returns:
            Track name to float32 ``(2, n)`` in :func:`separation.plan_tracks` order; the
            tracks sum to ``audio.samples`` (max abs error well under 1e-4) and each has
            its length.

        Raises:
            UnknownStemError: empty or unknown stems.
            SeparationCancelled: ``should_cancel()`` returned True.
            ModelUnavailableError: a needed model could not be loaded.
            ValueError: ``audio.samples`` is not a non-empty ``(2, n)`` array.
        """
        stems = list(stems)
        mix = _checked_mix(audio)
        sink = _ArraySink(plan_tracks(stems), mix.shape[1])
        self._stream(mix, stems, sink, ensemble, progress, should_cancel)
        return sink.tracks

    def separate_to_files(
        self,
        audio: Audio,
        stems: Iterable[str],
        out_dir: Path,
        *,
        ensemble: Ensemble | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> dict[str, RawTrack]:
        """Separate as :meth:`separate` does, writing each track to a raw file in
        ``out_dir`` as its samples are final, so memory stays bounded whatever the song's
        length: beyond the song itself, a few chunks per sub-model are held, not the tracks.

        Args:
            audio: the decoded song.
            stems: the picked sources.
            out_dir: the folder for the tracks' files (``<track>.f32``); created if missing.
            ensemble: as for :meth:`separate`.
            progress: as for :meth:`separate`.
            should_cancel: as for :meth:`separate`.

        Returns:
            Track name to :class:`separation.audio.RawTrack`, in
            :func:`separation.plan_tracks` order (for :func:`separation.encode_tracks`).

        Raises:
            UnknownStemError, SeparationCancelled, ModelUnavailableError, ValueError: as
                for :meth:`separate`; a cancelled or failed call leaves no track file.
            OSError: a track file could not be written (full or read-only disk).
        """
        stems = list(stems)
        mix = _checked_mix(audio)
        sink = _FileSink(plan_tracks(stems), mix.shape[1], out_dir)
        try:
            self._stream(mix, stems, sink, ensemble, progress, should_cancel)
        except BaseException:
            sink.discard()
            raise
        return sink.close()

    def warm_up(self) -> None:
        """Load now (e.g. at worker start), instead of on the first request, every
        sub-model of both models that some pick can run under the configured ensemble."""
        with self._lock:
            for name, source in sorted(self._usable(self.config.ensemble)):
                model = self._model(name)
                if source in model.sources:
                    for index in model.contributors(source):
                        model.sub_model(index)

    def loaded_sub_models(self) -> dict[str, list[str]]:
        """Per model name, the signatures of the sub-models loaded so far."""
        with self._lock:
            return {
                name: [model.signatures[i] for i in sorted(model.sub_models)]
                for name, model in self._models.items()
            }

    # -- estimation ------------------------------------------------------------------

    def _usable(self, ensemble: Ensemble) -> frozenset[tuple[str, str]]:
        """Every (model name, source) estimate some pick can use under any strategy with
        ``ensemble``'s blend weights (:func:`separation.strategies.usable_estimates`)."""
        usable = self._usable_by_ensemble.get(ensemble)
        if usable is None:
            usable = frozenset(
                (self._model_name(role), source)
                for role, source in strategies.usable_estimates(ensemble)
            )
            self._usable_by_ensemble[ensemble] = usable
        return usable

    def _model_name(self, role: str) -> str:
        name_a, name_b = self.config.models
        return name_a if role == strategies.ROLE_A else name_b

    def _stream(
        self,
        mix: Samples,
        stems: list[str],
        sink: _TrackSink,
        ensemble: Ensemble | None,
        progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
    ) -> None:
        """Estimate the sources ``stems`` need and hand the tracks to ``sink`` a span at a
        time, as soon as every sub-model has run every chunk over that span.

        The sub-models run in lockstep (the one furthest behind runs its next batch), so
        each holds a few chunks of cross-fade accumulator, and a span's tracks are built
        from all its estimates (computed, or read from the cache) at once; the strategy's
        combiner turns them into the picked sources' estimates (it may hold a span back)."""
        ensemble = ensemble or self.config.ensemble
        plan = strategies.plan(ensemble, stems)
        roles = {self._model_name(role): role for role in (strategies.ROLE_A, strategies.ROLE_B)}
        with self._lock, contextlib.ExitStack() as stack:
            requests = [(self._model_name(role), source) for role, source in plan.estimates]
            digest = audio_digest(mix) if self.cache is not None else ""
            length = mix.shape[1]
            cached: dict[tuple[str, str], CacheReader] = {}
            for model_name, source in requests:
                reader = self._cache_open(digest, model_name, source, mix.shape)
                if reader is not None:
                    cached[(model_name, source)] = stack.enter_context(reader)
            missing: dict[str, list[str]] = {}
            for model_name, source in requests:
                if (model_name, source) not in cached:
                    missing.setdefault(model_name, []).append(source)
            runs = self._plan_runs(missing, self._usable(ensemble))

            padded_length = max(length, _MIN_SAMPLES)
            mean, std = _reference_stats(mix, padded_length)
            song = _NormalisedSong(mix, padded_length, mean, std)

            # Every sub-model is loaded before the first pass sizes its batches from the
            # free device memory.
            sub_models = [[run.model.sub_model(sub.index) for sub in run.subs] for run in runs]
            passes: list[_Pass] = []
            for run, models in zip(runs, sub_models, strict=True):
                run.passes = [
                    [
                        _Pass(self, model, song, sub.keep_idx, delay)
                        for delay in self._shift_delays(model)
                    ]
                    for sub, model in zip(run.subs, models, strict=True)
                ]
                passes += [each for sub_passes in run.passes for each in sub_passes]
            total_chunks = sum(len(p.offsets) for p in passes)
            done = 0

            def before_chunk() -> None:
                if should_cancel is not None and should_cancel():
                    raise SeparationCancelled("cancelled between chunks")

            def after_chunk() -> None:
                nonlocal done
                done += 1
                if progress is not None:
                    progress(min(done / total_chunks, 0.999))

            writers: dict[tuple[str, str], CacheWriter] = {}
            if self.cache is not None:
                for run in runs:
                    for source in run.complete:
                        key = self._cache_key(digest, run.model.name, source)
                        writer = self.cache.writer(key, length)
                        stack.callback(writer.abort)
                        writers[(run.model.name, source)] = writer

            if progress is not None and passes:
                progress(0.0)
            combiner = plan.combiner()
            written = 0

            def write(spans: list[dict[str, np.ndarray]]) -> None:
                nonlocal written
                for estimates in spans:
                    stop = written + next(iter(estimates.values())).shape[-1]
                    sink.write(written, assemble_tracks(mix[:, written:stop], estimates, stems))
                    written = stop

            flushed = 0
            while flushed < length:
                ahead = [p for p in passes if not p.finished]
                if ahead:
                    laggard = min(ahead, key=lambda p: p.final_up_to)
                    laggard.run_batch(before_chunk, after_chunk)
                    if laggard.finished:
                        self.model_passes += 1
                    final = min(p.final_up_to for p in passes)
                else:
                    final = flushed + _FLUSH_FRAMES
                stop = min(final, length)
                if stop <= flushed:
                    continue
                found: dict[tuple[str, str], np.ndarray] = {
                    (roles[name], source): reader.read(flushed, stop)
                    for (name, source), reader in cached.items()
                }
                for run in runs:
                    for source, estimate in run.take(stop, mean, std).items():
                        found[(roles[run.model.name], source)] = estimate
                        entry = writers.get((run.model.name, source))
                        if entry is not None:
                            entry.write(estimate)
                write(combiner.push(mix[:, flushed:stop], found))
                flushed = stop
            write(combiner.finish())
            for writer in writers.values():
                writer.commit()
        if progress is not None:
            progress(1.0)

    def _shift_delays(self, sub_model: Any) -> list[int]:
        """The delay of the song in each of a sub-model's passes: none without shifts; with
        ``shifts``, demucs's random shifts (up to half a second, drawn as ``apply_model``
        draws them, one pass over the whole shifted song each)."""
        if self.config.shifts == 0:
            return [0]
        max_shift = int(0.5 * sub_model.samplerate)
        return [max_shift - random.randint(0, max_shift) for _ in range(self.config.shifts)]

    def _plan_runs(
        self, missing: Mapping[str, list[str]], usable: frozenset[tuple[str, str]]
    ) -> list[_ModelRun]:
        """What each model must run for its ``missing`` sources: the sub-models, and the
        sources they complete (the wanted ones, and with a cache every other one some pick
        could use, since they cost nothing more)."""
        runs: list[_ModelRun] = []
        for name, sources in missing.items():
            model = self._model(name)
            for source in sources:
                if source not in model.sources:
                    raise ModelUnavailableError(
                        f"model {name} has no source {source!r} (it has {model.sources}); "
                        f"set the blend weight of {source} accordingly"
                    )
            ran = {i for source in sources for i in model.contributors(source)}
            complete = [
                s
                for s in model.sources
                if set(model.contributors(s)) <= ran
                and (s in sources or (self.cache is not None and (model.name, s) in usable))
            ]
            subs = []
            for i in sorted(ran):
                keep = [s for s in complete if model.weights[i][model.sources.index(s)] != 0.0]
                subs.append(_SubRun(i, keep, [model.sources.index(s) for s in keep]))
            runs.append(_ModelRun(model, complete, subs))
        return runs

    def batch_size(self, segment_length: int) -> int:
        """Chunks of ``segment_length`` samples per forward pass: the configured
        ``batch_size``, else what fits half the free device memory on CUDA (from
        ``torch.cuda.mem_get_info`` and a measured per-sample activation size), else the
        batch measured fastest on CPU."""
        if self.config.batch_size > 0:
            return self.config.batch_size
        if self.device.type != "cuda":
            return _CPU_BATCH_SIZE
        free, _ = torch.cuda.mem_get_info(self.device)
        # Blocks our allocator caches but no tensor holds are free for us too.
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        per_chunk = _ACTIVATION_BYTES_PER_SAMPLE * segment_length
        return max(1, min(_MAX_BATCH_SIZE, int(free * _DEVICE_MEMORY_SHARE) // per_chunk))

    def autocast(self, sub_model: Any) -> contextlib.AbstractContextManager[Any]:
        """Autocast for ``sub_model``'s forward pass; nothing in fp32, or for a network that
        holds bf16 itself (on CPU, :func:`separation.bf16.run_network_in_bf16`).

        HTDemucs computes its STFT and iSTFT inside ``forward``, yet they stay float32 under
        autocast without patching demucs: autocast lowers only matmul- and conv-like ops
        (no FFT op is on its lower-precision lists, on CPU or CUDA), the STFT reads the
        float32 input, and the decoder's output is rescaled by float32 statistics before
        the iSTFT, which promotes it back to float32 (tests/separation/test_passes.py
        checks the dtypes the spectral ops see)."""
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        if dtype is None or runs_in_bf16(sub_model):
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # -- models ----------------------------------------------------------------------

    def _model(self, name: str) -> _LoadedModel:
        with self._lock:
            loaded = self._models.get(name)
            if loaded is None:
                loaded = self._load(name)
                self._models[name] = loaded
            return loaded

    def _load(self, name: str) -> _LoadedModel:
        repo = self.config.model_repo
        if repo is not None and not repo.is_dir():
            raise ModelUnavailableError(f"model folder {repo} does not exist")
        logger.info(
            "loading model %s from %s on %s (%s)",
            name,
            repo or "demucs download",
            self.device,
            self.precision,
        )
        if repo is not None and (repo / f"{name}.yaml").is_file():
            return self._load_bag_lazily(name, repo)
        return self._load_whole(name, repo)

    def _load_whole(self, name: str, repo: Path | None) -> _LoadedModel:
        """A model through demucs's ``get_model`` (a download, or a single model file),
        every sub-model at once."""
        from demucs.apply import BagOfModels
        from demucs.pretrained import get_model

        from separation.loading import skip_random_init

        try:
            # No random weights drawn: demucs's set_state loads each package's state with
            # a strict load_state_dict, so every parameter (HTDemucs has no buffers) is
            # the checkpoint's or the load raises (a diffq-quantized package needs diffq,
            # not installed).
            with skip_random_init():
                model: Any = get_model(name, repo=repo)
        except Exception as exc:  # demucs raises several kinds; all mean "not available"
            raise ModelUnavailableError(f"could not load model {name}: {exc}") from exc
        if isinstance(model, BagOfModels):
            sub_models = list(model.models)
            weights = [list(map(float, row)) for row in model.weights]
        else:
            sub_models = [model]
            weights = [[1.0] * len(model.sources)]
        loaded = {i: self._placed(sub_model) for i, sub_model in enumerate(sub_models)}
        signatures = [f"{name}[{i}]" for i in range(len(sub_models))]
        return _LoadedModel(
            name, list(model.sources), signatures, weights, loaded.__getitem__, loaded
        )

    def _load_bag_lazily(self, name: str, repo: Path) -> _LoadedModel:
        """A bag of models from a local folder, as demucs's ``get_model`` reads it (the
        ``.yaml`` names the sub-models' signatures, their weights and a segment), with
        each sub-model loaded by demucs only when first needed: htdemucs_ft's four
        sub-models cost about 0.6 s and 170 MB each, and under the design's blend weights
        no pick runs its ``other`` sub-model, a vocals pick only one of them."""
        from demucs.apply import BagOfModels
        from demucs.repo import LocalRepo

        from separation.loading import load_verified, skip_random_init

        try:
            bag = yaml.safe_load((repo / f"{name}.yaml").read_text())
            signatures = [str(sig) for sig in bag["models"]]
            model_repo = LocalRepo(repo)
        except Exception as exc:  # unreadable, not YAML, no list of models
            raise ModelUnavailableError(f"could not load model {name}: {exc}") from exc
        reference: list[Any] = []
        # The bag's sources once known; each sub-model must name the same, in the same
        # order, or the bag's weights would fall on the wrong stems.
        bag_sources: list[str] = []

        def load_sub_model(index: int) -> Any:
            try:
                # No random weights drawn: every parameter is the checkpoint's (see
                # _load_whole).
                with skip_random_init():
                    sub_model = load_verified(model_repo, signatures[index])
                # demucs's own bag checks the sub-models agree (sources, rate, channels)
                # and applies the bag's segment to this one, as for a whole bag.
                BagOfModels([*reference, sub_model], None, bag.get("segment"))
                if bag_sources and list(sub_model.sources) != bag_sources:
                    raise ValueError(
                        f"its sources {list(sub_model.sources)} are not the bag's {bag_sources}"
                    )
            except Exception as exc:  # demucs raises several kinds; all mean "not available"
                raise ModelUnavailableError(
                    f"could not load sub-model {signatures[index]} of {name}: {exc}"
                ) from exc
            if not reference:
                reference.append(sub_model)
            # Outside the try: a device out of memory is not a model that is unavailable.
            return self._placed(sub_model)

        # The first sub-model tells the bag's sources, which its weights are ordered by:
        # read from its package without building it where it names them, else built.
        loaded: dict[int, Any] = {}
        sources = _package_sources(model_repo, signatures[0])
        if sources is None:
            loaded[0] = load_sub_model(0)
            sources = list(loaded[0].sources)
        bag_sources.extend(sources)
        rows = bag.get("weights") or [[1.0] * len(sources) for _ in signatures]
        try:
            weights = [list(map(float, row)) for row in rows]
        except (TypeError, ValueError):
            weights = []
        if len(weights) != len(signatures) or any(len(row) != len(sources) for row in weights):
            raise ModelUnavailableError(
                f"the weights of {name} are not one row of {len(sources)} numbers for each "
                f"of its {len(signatures)} sub-models"
            )
        return _LoadedModel(name, sources, signatures, weights, load_sub_model, loaded)

    def _placed(self, sub_model: Any) -> Any:
        """A loaded sub-model on the device, in eval mode, in the layout its passes use."""
        return place_sub_model(sub_model, self.device, self.precision)

    def _identity(self, name: str) -> str:
        """What identifies a model's weights, read without loading them (for cache keys)."""
        cached = self._identities.get(name)
        if cached is not None:
            return cached
        repo = self.config.model_repo
        if repo is None or not repo.is_dir():
            identity = f"download:{name}"
        else:
            digest = hashlib.sha256(name.encode())
            files = {path.stem.rsplit("-", 1)[0]: path for path in repo.glob("*.th")}
            bag_file = repo / f"{name}.yaml"
            if bag_file.is_file():
                content = bag_file.read_bytes()
                digest.update(content)
                try:
                    sigs = list(yaml.safe_load(content).get("models", []))
                except (yaml.YAMLError, AttributeError):
                    sigs = []
            else:
                sigs = [name]
            for sig in sigs:
                path = files.get(str(sig))
                if path is not None:
                    # The file name carries the checksum demucs verifies; size guards the rest.
                    digest.update(f"{path.name}:{path.stat().st_size}".encode())
            identity = f"local:{digest.hexdigest()}"
        self._identities[name] = identity
        return identity

    # -- cache -----------------------------------------------------------------------

    def _cache_key(self, digest: str, model_name: str, source: str) -> str:
        return SourceCache.key(
            _CACHE_FORMAT,
            digest,
            self._identity(model_name),
            f"shifts={self.config.shifts}",
            f"overlap={self.config.overlap}",
            f"precision={self.precision}",
            source,
        )

    def _cache_open(
        self, digest: str, model_name: str, source: str, shape: tuple[int, ...]
    ) -> CacheReader | None:
        if self.cache is None:
            return None
        return self.cache.open(self._cache_key(digest, model_name, source), shape)


# -- streaming ---------------------------------------------------------------------------


def _checked_mix(audio: Audio) -> Samples:
    """The song's samples, checked; a song on disk stays there (its windows are read as
    the passes reach them)."""
    mix = audio.samples
    if not isinstance(mix, SpooledSamples):
        mix = np.ascontiguousarray(mix, dtype=np.float32)
    if mix.ndim != 2 or mix.shape[0] != 2 or mix.shape[1] == 0:
        raise ValueError(f"audio samples are a non-empty (2, n) array, not {mix.shape}")
    return mix


def _reference_stats(mix: Samples, padded_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std (+1e-8) of the mono reference, as demucs's own separation
    normalises a song (over the zero-padded song when it is padded); summed a block at a
    time in float64, so no mono copy of a whole song is made."""
    total = 0.0
    squares = 0.0
    for start in range(0, mix.shape[1], _STATS_BLOCK):
        mono = mix[:, start : start + _STATS_BLOCK].mean(axis=0, dtype=np.float64)
        total += float(mono.sum())
        squares += float(np.dot(mono, mono))
    mean = total / padded_length
    variance = max(0.0, (squares - padded_length * mean * mean) / max(1, padded_length - 1))
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(
        variance**0.5 + 1e-8, dtype=torch.float32
    )


class _NormalisedSong:
    """The song as the network sees it, normalised a window at a time (a normalised copy
    of a whole song would be one more song in memory)."""

    def __init__(self, mix: Samples, length: int, mean: torch.Tensor, std: torch.Tensor) -> None:
        self._mix = mix
        self.length = length  # the song's length, zero-padded to the model's minimum
        self._mean = mean
        self._std = std

    def window(self, start: int, stop: int) -> torch.Tensor:
        """Normalised samples ``[start, stop)`` as ``(1, 2, stop - start)``; zero outside
        the (padded) song, as demucs's ``TensorChunk.padded`` pads the normalised song."""
        inside_start, inside_stop = max(0, start), min(self.length, stop)
        real_stop = max(inside_start, min(inside_stop, self._mix.shape[1]))
        # A view of a song in memory; a read of a song on disk.
        real = torch.from_numpy(self._mix[:, inside_start:real_stop])
        # A song shorter than the model's minimum was zero-padded before normalising.
        raw = torch.nn.functional.pad(real, (0, inside_stop - real_stop))
        normalised = (raw - self._mean) / self._std
        padded = torch.nn.functional.pad(normalised, (inside_start - start, stop - inside_stop))
        return padded[None]


@dataclass
class _SubRun:
    """A sub-model to run and the sources of its output to keep (names and indices)."""

    index: int
    keep: list[str]
    keep_idx: list[int]


@dataclass
class _ModelRun:
    """What one model runs for a request: its sub-models' passes (one per shift), and the
    sources they complete (each the weighted sum of its sub-models' estimates)."""

    model: _LoadedModel
    complete: list[str]
    subs: list[_SubRun]
    passes: list[list[_Pass]] = field(default_factory=list)  # per sub-run, one per shift

    def take(self, stop: int, mean: torch.Tensor, std: torch.Tensor) -> dict[str, np.ndarray]:
        """The complete sources' final estimates up to ``stop``, de-normalised."""
        sums: dict[str, torch.Tensor] = {}
        for sub, shifted in zip(self.subs, self.passes, strict=True):
            out = shifted[0].take(stop)
            if len(shifted) > 1:
                # As apply_model averages its shifts: summed, then divided.
                for other in shifted[1:]:
                    out += other.take(stop)
                out /= len(shifted)
            for j, source in enumerate(sub.keep):
                weight = self.model.weights[sub.index][sub.keep_idx[j]]
                if source in sums:
                    sums[source] += out[j] * weight
                elif weight == 1.0:
                    sums[source] = out[j]  # a view: no copy per source
                else:
                    sums[source] = out[j] * weight
        estimates: dict[str, np.ndarray] = {}
        for source in self.complete:
            total = sum(row[self.model.sources.index(source)] for row in self.model.weights)
            estimate = sums.pop(source)
            estimate.div_(total).mul_(std).add_(mean)
            estimates[source] = estimate.numpy()
        return estimates


def chunk_offsets(length: int, segment: int, overlap: float) -> range:
    """Where a pass's chunks start in a song of ``length`` samples: every ``(1 - overlap)``
    segment from the start, as demucs's ``apply_model`` places them, up to the first chunk
    that reaches the song's end.

    ``apply_model`` goes on while a chunk would start before the end. When the chunk before
    already reaches the end (at overlap 0.25, for a third of all song lengths: those ending
    within the first third of a stride after a chunk's start), its last chunk holds at most
    ``overlap`` of a segment of the song, all of it also in that chunk, padded to a whole
    segment: a whole forward pass for a share of the cross-fade over the song's last
    seconds. Without it every sample still has a chunk with a positive weight, and the
    estimates before the dropped chunk's start are ``apply_model``'s.

    Args:
        length: the song's samples (with a random shift's delay, the delayed song's).
        segment: samples per chunk.
        overlap: the share of a segment that consecutive chunks share, in ``[0, 1)``.

    Returns:
        The chunks' first samples, in order; one chunk (at 0) for a song of at most a
        segment.
    """
    stride = max(1, int((1 - overlap) * segment))
    # The first chunk with start + segment >= length is the last.
    last = max(0, -(-(length - segment) // stride))
    return range(0, (last + 1) * stride, stride)


class _Pass:
    """One sub-model over the song, chunked and cross-faded as demucs's ``apply_model``
    does, chunk by chunk in order, without a last chunk that would add nothing of its own
    (:func:`chunk_offsets`); the accumulator holds only the span not yet taken.

    The chunks go through the network in batches; each chunk is padded and trimmed exactly
    as ``apply_model`` pads and trims it alone, so a batch gives batch 1's result up to
    float rounding. With random shifts, the pass runs over the song delayed by ``delay``
    samples (zeros first), as ``apply_model`` runs over a shifted song, and its output is
    read back ``delay`` samples later."""

    def __init__(
        self,
        separator: EnsembleSeparator,
        sub_model: Any,
        song: _NormalisedSong,
        keep_idx: list[int],
        delay: int = 0,
    ) -> None:
        self._separator = separator
        self._sub_model = sub_model
        self._song = song
        self._keep_idx = keep_idx
        self._delay = delay
        self._segment_length = int(sub_model.samplerate * float(sub_model.segment))
        # Positions below are in the delayed song: position p is the song's p - delay.
        self.offsets = chunk_offsets(
            song.length + delay, self._segment_length, separator.config.overlap
        )
        self._next = 0
        self._batch_size = separator.batch_size(self._segment_length)
        # The triangular cross-fade of demucs's apply_model (transition_power 1).
        half = self._segment_length // 2
        weight = torch.cat(
            [torch.arange(1, half + 1), torch.arange(self._segment_length - half, 0, -1)]
        ).float()
        self._weight = weight / weight.max()
        self._base = delay  # the accumulators' first sample (the song's first)
        self._out = torch.zeros(len(keep_idx), 2, 0)
        self._sum_weight = torch.zeros(0)

    @property
    def finished(self) -> bool:
        """Every chunk has run."""
        return self._next >= len(self.offsets)

    @property
    def final_up_to(self) -> int:
        """Samples of the song before this position have every chunk they are in
        accumulated."""
        if self.finished:
            return self._song.length
        return max(0, self.offsets[self._next] - self._delay)

    def take(self, stop: int) -> torch.Tensor:
        """The cross-faded estimates from what was taken before up to the song's position
        ``stop``, as ``(len(keep), 2, m)``; they leave the accumulator."""
        n = stop + self._delay - self._base
        out = self._out[..., :n] / self._sum_weight[:n]
        self._out = self._out[..., n:]
        self._sum_weight = self._sum_weight[n:]
        self._base += n
        return out

    def run_batch(self, before_chunk: Callable[[], None], after_chunk: Callable[[], None]) -> None:
        """Run the next batch of chunks and accumulate them."""
        from demucs.htdemucs import HTDemucs
        from demucs.utils import center_trim

        separator = self._separator
        length = self._song.length + self._delay
        # (offset, samples of the song in the chunk, the chunk padded as apply_model pads it)
        batch: list[tuple[int, int, torch.Tensor]] = []
        while not self.finished and len(batch) < self._batch_size:
            offset = self.offsets[self._next]
            chunk_length = min(length - offset, self._segment_length)
            # apply_model's input length: HTDemucs takes its training segment.
            if isinstance(self._sub_model, HTDemucs):
                valid_length = self._segment_length
            elif hasattr(self._sub_model, "valid_length"):
                valid_length = self._sub_model.valid_length(chunk_length)
            else:
                valid_length = chunk_length
            if batch and batch[0][2].shape[-1] != valid_length:
                break  # other models' last chunk may be shorter: not stackable
            before_chunk()
            start = offset - (valid_length - chunk_length) // 2 - self._delay
            batch.append((offset, chunk_length, self._song.window(start, start + valid_length)))
            self._next += 1
        inputs = torch.cat([padded for _, _, padded in batch])
        if separator.device.type == "cuda":
            # Through pinned host memory, the copy to the device does not block; the song
            # stays on the host and only one batch is on the device, whatever its length.
            inputs = inputs.pin_memory().to(separator.device, non_blocking=True)
        else:
            inputs = inputs.to(separator.device)
        heap = activations_on_heap() if separator.device.type == "cpu" else contextlib.nullcontext()
        with torch.no_grad(), separator.autocast(self._sub_model), heap:
            batch_out = self._sub_model(inputs)
        del inputs
        # A blocking copy back: the accumulators and the cross-fade stay on the host.
        kept = batch_out[:, self._keep_idx].float().to("cpu")
        del batch_out
        last_offset, last_length, _ = batch[-1]
        self._grow_to(last_offset + last_length)  # once per batch, not per chunk
        for j, (offset, chunk_length, _) in enumerate(batch):
            self._accumulate(offset, center_trim(kept[j], chunk_length))
            after_chunk()

    def _grow_to(self, stop: int) -> None:
        """Extend the accumulators with zeros up to position ``stop`` of the delayed song."""
        grow = stop - self._base - self._out.shape[-1]
        if grow > 0:
            zeros = self._out.new_zeros(*self._out.shape[:-1], grow)
            self._out = torch.cat([self._out, zeros], -1)
            self._sum_weight = torch.cat([self._sum_weight, self._sum_weight.new_zeros(grow)])

    def _accumulate(self, offset: int, kept: torch.Tensor) -> None:
        n = kept.shape[-1]
        # With a delay, the start of the first chunks is before the song: not kept.
        skip = min(n, max(0, self._base - offset))
        start, stop = offset + skip - self._base, offset + n - self._base
        self._grow_to(offset + n)
        self._out[..., start:stop] += self._weight[skip:n] * kept[..., skip:]
        self._sum_weight[start:stop] += self._weight[skip:n]


class _TrackSink(Protocol):
    """Where the tracks go, a span at a time, in order."""

    def write(self, start: int, tracks: Mapping[str, np.ndarray]) -> None:
        """Take the tracks' samples ``[start, start + m)`` (each ``(2, m)``)."""


class _ArraySink:
    """The tracks in memory, whole."""

    def __init__(self, names: Iterable[str], length: int) -> None:
        self.tracks = {name: np.empty((2, length), dtype=np.float32) for name in names}

    def write(self, start: int, tracks: Mapping[str, np.ndarray]) -> None:
        for name, span in tracks.items():
            self.tracks[name][:, start : start + span.shape[1]] = span


class _FileSink:
    """The tracks in raw files (interleaved float32), appended span by span."""

    def __init__(self, names: Iterable[str], length: int, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self._length = length
        self._paths = {name: out_dir / f"{name}.f32" for name in names}
        self._files: dict[str, BinaryIO] = {}
        try:
            for name, path in self._paths.items():
                self._files[name] = path.open("wb")
        except BaseException:
            self.discard()
            raise

    def write(self, start: int, tracks: Mapping[str, np.ndarray]) -> None:
        for name, span in tracks.items():
            self._files[name].write(np.ascontiguousarray(span.T, dtype=np.float32).data)

    def close(self) -> dict[str, RawTrack]:
        """Close the files; the tracks they hold."""
        try:
            for file in self._files.values():
                file.close()
        except BaseException:
            self.discard()
            raise
        return {name: RawTrack(path, self._length) for name, path in self._paths.items()}

    def discard(self) -> None:
        """Close and delete the files."""
        for file in self._files.values():
            with contextlib.suppress(OSError):
                file.close()
        for path in self._paths.values():
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
