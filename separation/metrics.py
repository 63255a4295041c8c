"""Separation quality: BSS Eval's SDR/SIR/SAR (as mir_eval's ``bss_eval_sources``), numpy only.

Each estimate is decomposed into the part a 512-tap filter of its true source explains,
the part other true sources explain (interference) and the rest (artifacts); the best
permutation of estimates to references is the one with the highest mean SIR.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

FILTER_LENGTH = 512


@dataclass(frozen=True)
class BssEvalResult:
    """Per-reference figures in dB and the permutation that matched estimates to references.

    Attributes:
        sdr: source-to-distortion ratio per reference source.
        sir: source-to-interference ratio per reference source.
        sar: source-to-artifacts ratio per reference source.
        permutation: ``permutation[j]`` is the estimate matched with reference ``j``.
    """

    sdr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray
    permutation: np.ndarray


def _safe_db(num: float, den: float) -> float:
    if den == 0:
        return float("inf")
    return float(10 * np.log10(num / den))


def _toeplitz(column: np.ndarray, row: np.ndarray) -> np.ndarray:
    n = len(column)
    i, j = np.ogrid[:n, :n]
    values = np.concatenate([row[:0:-1], column])  # row reversed (without [0]), then column
    return values[(i - j) + (n - 1)]


def _fft_convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    size = len(a) + len(b) - 1
    n_fft = 1 << (size - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(a, n_fft) * np.fft.rfft(b, n_fft), n_fft)[:size]


def _project(references: np.ndarray, estimate: np.ndarray, flen: int) -> np.ndarray:
    """Least-squares projection of ``estimate`` on ``flen``-tap filters of ``references``."""
    nsrc, nsampl = references.shape
    refs = np.hstack([references, np.zeros((nsrc, flen - 1))])
    est = np.concatenate([estimate, np.zeros(flen - 1)])
    n_fft = int(2 ** np.ceil(np.log2(nsampl + flen - 1.0)))
    sf = np.fft.fft(refs, n=n_fft, axis=1)
    sef = np.fft.fft(est, n=n_fft)
    gram = np.zeros((nsrc * flen, nsrc * flen))
    for i in range(nsrc):
        for j in range(i, nsrc):
            ssf = np.real(np.fft.ifft(sf[i] * np.conj(sf[j])))
            block = _toeplitz(np.concatenate([ssf[:1], ssf[-1:-flen:-1]]), ssf[:flen])
            gram[i * flen : (i + 1) * flen, j * flen : (j + 1) * flen] = block
            gram[j * flen : (j + 1) * flen, i * flen : (i + 1) * flen] = block.T
    inner = np.zeros(nsrc * flen)
    for i in range(nsrc):
        ssef = np.real(np.fft.ifft(sf[i] * np.conj(sef)))
        inner[i * flen : (i + 1) * flen] = np.concatenate([ssef[:1], ssef[-1:-flen:-1]])
    try:
        coefficients = np.linalg.solve(gram, inner)
    except np.linalg.LinAlgError:
        coefficients = np.linalg.lstsq(gram, inner, rcond=None)[0]
    filters = coefficients.reshape(flen, nsrc, order="F")
    projection = np.zeros(nsampl + flen - 1)
    for i in range(nsrc):
        projection += _fft_convolve(filters[:, i], refs[i])[: nsampl + flen - 1]
    return projection


def _decompose(
    references: np.ndarray, estimate: np.ndarray, j: int, flen: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    nsampl = estimate.size
    s_true = np.concatenate([references[j], np.zeros(flen - 1)])
    e_spat = _project(references[j][None, :], estimate, flen) - s_true
    e_interf = _project(references, estimate, flen) - s_true - e_spat
    e_artif = -s_true - e_spat - e_interf
    e_artif[:nsampl] += estimate
    return s_true, e_spat, e_interf, e_artif


def bss_eval_sources(
    references: np.ndarray,
    estimates: np.ndarray,
    *,
    flen: int = FILTER_LENGTH,
    compute_permutation: bool = True,
) -> BssEvalResult:
    """BSS Eval v3 source measures of single-channel estimates against references.

    Args:
        references: ``(nsrc, nsampl)`` true sources.
        estimates: ``(nsrc, nsampl)`` estimated sources, any order.
        flen: the distortion filter length in taps (512 as in mir_eval).
        compute_permutation: find the best matching; False when ``estimates[j]`` is known
            to estimate ``references[j]`` (labelled stems), which is ``nsrc`` times cheaper.

    Returns:
        SDR, SIR and SAR per reference, under the best permutation (highest mean SIR).
    """
    references = np.atleast_2d(np.asarray(references, dtype=np.float64))
    estimates = np.atleast_2d(np.asarray(estimates, dtype=np.float64))
    if references.shape != estimates.shape:
        raise ValueError(f"shapes differ: {references.shape} vs {estimates.shape}")
    nsrc = references.shape[0]
    sdr = np.empty((nsrc, nsrc))
    sir = np.empty((nsrc, nsrc))
    sar = np.empty((nsrc, nsrc))
    for jest in range(nsrc):
        for jtrue in range(nsrc):
            if not compute_permutation and jest != jtrue:
                continue
            s_true, e_spat, e_interf, e_artif = _decompose(references, estimates[jest], jtrue, flen)
            s_filt = s_true + e_spat
            sdr[jest, jtrue] = _safe_db(np.sum(s_filt**2), np.sum((e_interf + e_artif) ** 2))
            sir[jest, jtrue] = _safe_db(np.sum(s_filt**2), np.sum(e_interf**2))
            sar[jest, jtrue] = _safe_db(np.sum((s_filt + e_interf) ** 2), np.sum(e_artif**2))
    columns = np.arange(nsrc)
    if not compute_permutation:
        return BssEvalResult(
            sdr=np.diag(sdr).copy(),
            sir=np.diag(sir).copy(),
            sar=np.diag(sar).copy(),
            permutation=columns,
        )
    perms = list(itertools.permutations(range(nsrc)))
    best = max(perms, key=lambda perm: float(np.mean(sir[list(perm), columns])))
    rows = list(best)
    return BssEvalResult(
        sdr=sdr[rows, columns],
        sir=sir[rows, columns],
        sar=sar[rows, columns],
        permutation=np.asarray(best),
    )


def signal_to_distortion(reference: np.ndarray, estimate: np.ndarray) -> float:
    """The plain SDR in dB (no filter allowed): ``10 log10(|s|^2 / |s - s_hat|^2)``."""
    reference = np.asarray(reference, dtype=np.float64)
    error = reference - np.asarray(estimate, dtype=np.float64)
    return _safe_db(float(np.sum(reference**2)) + 1e-12, float(np.sum(error**2)) + 1e-12)
