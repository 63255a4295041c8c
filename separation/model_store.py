"""The local model folder: what the ensemble needs, fetching it, and checking it.

A model folder is in demucs's ``LocalRepo`` format: one ``<name>.yaml`` per model (a bag
listing sub-model signatures) and one ``<sig>-<sha8>.th`` per sub-model, where ``sha8`` is
the start of the file's SHA-256 (demucs verifies it when loading). Pointing
``DEMIX_MODEL_REPO`` at such a folder lets workers start without network access.

Fetching copies the bag files shipped inside demucs (``demucs/remote/*.yaml``) and
downloads the legacy ``.th`` weights they name (``demucs/remote/files.txt``), resumably
(``<file>.part`` plus HTTP ranges) and atomically (a file gets its final name only after
its checksum matched). Checking reports every missing, corrupt or unloadable file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from separation.tracks import SOURCES

DEMUCS_ROOT_URL = "https://dl.fbaipublicfiles.com/demucs/"

# What each ensemble member must provide (see DESIGN.md "The ensemble"): model A serves
# drums, bass and vocals; model B is the 6-source model whose `other` excludes guitar/piano.
REQUIRED_SOURCES: tuple[frozenset[str], frozenset[str]] = (
    frozenset({"drums", "bass", "vocals"}),
    frozenset(SOURCES),
)

_CHUNK = 1 << 20

ProgressCallback = Callable[[str, int, int | None], None]


class ModelStoreError(Exception):
    """A model folder could not be fetched; the message is meant for the operator."""


@dataclass(frozen=True)
class WeightFile:
    """One sub-model's weights: ``<sig>-<sha8>.th`` and where to download it."""

    sig: str
    file_name: str
    url: str

    @property
    def checksum(self) -> str:
        """The SHA-256 prefix encoded in the file name ("" when the name has none)."""
        stem = self.file_name.removesuffix(".th")
        return stem.rsplit("-", 1)[1] if "-" in stem else ""


@dataclass(frozen=True)
class RemoteIndex:
    """Where bag files and weights come from: a folder of ``<name>.yaml`` and a URL per sig."""

    yaml_dir: Path
    urls: Mapping[str, str]

    @classmethod
    def demucs(cls, root_url: str | None = None) -> RemoteIndex:
        """demucs's own legacy index (the yaml files and ``files.txt`` shipped with demucs).

        Args:
            root_url: a mirror to download from instead of demucs's server; it must keep
                the server's layout (e.g. ``<root_url>hybrid_transformer/<file>.th``).
        """
        from demucs.pretrained import REMOTE_ROOT

        root = root_url or DEMUCS_ROOT_URL
        if not root.endswith("/"):
            root += "/"
        return cls(REMOTE_ROOT, _parse_files_txt((REMOTE_ROOT / "files.txt").read_text(), root))

    def model_names(self) -> list[str]:
        """Every model name this index can fetch."""
        return sorted(p.stem for p in self.yaml_dir.glob("*.yaml"))

    def weight_files(self, name: str) -> list[WeightFile]:
        """The weight files of model ``name``; raises ModelStoreError when it is unknown."""
        yaml_path = self.yaml_dir / f"{name}.yaml"
        if not yaml_path.is_file():
            known = ", ".join(self.model_names()) or "none"
            raise ModelStoreError(f"unknown model {name!r}; this index has: {known}")
        files = []
        for sig in bag_signatures(yaml_path):
            url = self.urls.get(sig)
            if url is None:
                raise ModelStoreError(f"model {name!r} needs sub-model {sig}, not in the index")
            files.append(WeightFile(sig, url.rsplit("/", 1)[-1], url))
        return files


def _parse_files_txt(text: str, root_url: str) -> dict[str, str]:
    # Same grammar as demucs.pretrained._parse_remote_files: "root: <dir>/" lines switch
    # the folder, other lines are "<sig>-<sha8>.th".
    folder = ""
    urls: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("root:"):
            folder = line.split(":", 1)[1].strip()
        else:
            urls[line.split("-", 1)[0]] = root_url + folder + line
    return urls


def bag_signatures(yaml_path: Path) -> list[str]:
    """The sub-model signatures listed by a bag file; raises ValueError when malformed."""
    data = yaml.safe_load(yaml_path.read_text())
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list) or not models or not all(isinstance(s, str) for s in models):
        raise ValueError(f"{yaml_path.name} has no 'models' list of signatures")
    return list(models)


def file_checksum(path: Path, length: int = 64) -> str:
    """The first ``length`` hex digits of the file's SHA-256 (demucs's naming rule)."""
    sha = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()[:length]


def _checksum_ok(path: Path, checksum: str) -> bool:
    return not checksum or file_checksum(path, len(checksum)) == checksum


# ---------------------------------------------------------------------------------------
# fetch


def fetch_models(
    names: Iterable[str],
    dest: Path,
    *,
    index: RemoteIndex | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
) -> list[Path]:
    """Download models into ``dest`` in demucs's LocalRepo format.

    Files already present with a matching checksum are kept; a ``<file>.part`` left by an
    interrupted run is resumed with an HTTP range request. Each weight file gets its final
    name only after its checksum matched, and each bag file is written after its weights,
    so an interrupted fetch never leaves a bag pointing at a half-written file.

    Args:
        names: model names, e.g. ``("htdemucs_ft", "htdemucs_6s")``.
        dest: the model folder; created if missing.
        index: where to fetch from; default demucs's legacy index
            (:meth:`RemoteIndex.demucs`).
        progress: called as ``progress(file_name, bytes_done, bytes_total_or_None)``
            while downloading, and once with ``bytes_done == bytes_total`` for files that
            were already present.
        timeout: seconds without progress before a connection is given up.

    Returns:
        The paths written or kept: every weight file, then the bag files.

    Raises:
        ModelStoreError: unknown model, network failure (the message names the URL and
            the reason) or a checksum mismatch after download.
    """
    index = index or RemoteIndex.demucs()
    dest.mkdir(parents=True, exist_ok=True)
    plan = [(name, index.weight_files(name)) for name in names]
    paths: list[Path] = []
    for name, weights in plan:
        for weight in weights:
            paths.append(_fetch_weight(weight, dest, progress, timeout))
        yaml_dest = dest / f"{name}.yaml"
        tmp = dest / f".{name}.yaml.tmp"
        shutil.copyfile(index.yaml_dir / f"{name}.yaml", tmp)
        os.replace(tmp, yaml_dest)
        paths.append(yaml_dest)
    return paths


def _fetch_weight(
    weight: WeightFile, dest: Path, progress: ProgressCallback | None, timeout: float
) -> Path:
    final = dest / weight.file_name
    if final.is_file():
        if _checksum_ok(final, weight.checksum):
            size = final.stat().st_size
            if progress:
                progress(weight.file_name, size, size)
            return final
        final.unlink()
    part = dest / f"{weight.file_name}.part"
    try:
        _download(weight.url, part, weight.file_name, progress, timeout)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ModelStoreError(
            f"could not download {weight.url}: {reason} "
            f"({part.stat().st_size if part.exists() else 0} bytes kept in {part.name}; "
            "the next fetch resumes)"
        ) from exc
    if not _checksum_ok(part, weight.checksum):
        actual = file_checksum(part, len(weight.checksum))
        part.unlink()
        raise ModelStoreError(
            f"{weight.file_name} downloaded from {weight.url} has checksum {actual}, "
            f"expected {weight.checksum}; the partial file was deleted, fetch again"
        )
    os.replace(part, final)
    return final


def _download(
    url: str, part: Path, label: str, progress: ProgressCallback | None, timeout: float
) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "neural-music-demixing"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        # 416: the part already holds the whole file; its checksum decides.
        if exc.code == 416 and have:
            return
        raise
    with response:
        status = response.status
        if status == 206:
            mode = "ab"
        else:
            # The server ignored the range (or there was none): start over.
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with part.open(mode) as out:
            _copy(response, out, label, have, total, progress)


def _copy(
    response: Any,
    out: IO[bytes],
    label: str,
    done: int,
    total: int | None,
    progress: ProgressCallback | None,
) -> None:
    if progress:
        progress(label, done, total)
    while chunk := response.read(_CHUNK):
        out.write(chunk)
        done += len(chunk)
        if progress:
            progress(label, done, total)
    if total is not None and done < total:
        raise OSError(f"connection closed after {done} of {total} bytes")


# ---------------------------------------------------------------------------------------
# check


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a model folder."""

    model: str
    # missing-folder, missing-yaml, bad-yaml, missing-weights, duplicate-weights,
    # checksum, load, sources
    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.model}: {self.kind}: {self.path}: {self.detail}"


@dataclass
class RepoCheck:
    """The outcome of :func:`check_model_repo`."""

    root: Path
    problems: list[Problem] = field(default_factory=list)
    files_ok: list[str] = field(default_factory=list)
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every model is present, intact and (if asked) loadable."""
        return not self.problems


def check_model_repo(
    root: Path,
    names: Sequence[str],
    *,
    load: bool = True,
    required_sources: Sequence[frozenset[str]] | None = REQUIRED_SOURCES,
) -> RepoCheck:
    """Verify a model folder: bag files, weight files present, checksums, loadable.

    Every problem is collected (not only the first), so one run says all that is missing.

    Args:
        root: the model folder (``DEMIX_MODEL_REPO``).
        names: model names to check, in ensemble order (model A, model B).
        load: also load each complete model through demucs's loader
            (``demucs.pretrained.get_model``), as the workers do.
        required_sources: the sources each model must provide, by position in ``names``;
            None skips this check.

    Returns:
        A :class:`RepoCheck`; ``ok`` is True when nothing is wrong.
    """
    report = RepoCheck(root)
    if not root.is_dir():
        for name in names:
            report.problems.append(Problem(name, "missing-folder", str(root), "no such folder"))
        return report
    weights_by_sig: dict[str, list[Path]] = {}
    for path in sorted(root.glob("*.th")):
        sig = path.stem.rsplit("-", 1)[0] if "-" in path.stem else path.stem
        weights_by_sig.setdefault(sig, []).append(path)

    for position, name in enumerate(names):
        before = len(report.problems)
        sigs = _model_sigs(root, name, weights_by_sig, report)
        for sig in sigs:
            _check_weight(name, sig, weights_by_sig.get(sig, []), report)
        if len(report.problems) > before or not sigs or not load:
            continue
        sources = _load_sources(root, name, report)
        if sources is None:
            continue
        report.sources[name] = sources
        if required_sources is not None and position < len(required_sources):
            lacking = required_sources[position] - set(sources)
            if lacking:
                report.problems.append(
                    Problem(
                        name,
                        "sources",
                        f"{name}.yaml",
                        f"provides {', '.join(sources)}; lacks {', '.join(sorted(lacking))}",
                    )
                )
    return report


def _model_sigs(
    root: Path, name: str, weights_by_sig: Mapping[str, list[Path]], report: RepoCheck
) -> list[str]:
    yaml_path = root / f"{name}.yaml"
    if not yaml_path.is_file():
        if name in weights_by_sig:
            # demucs also accepts a bare signature as a model name.
            return [name]
        report.problems.append(Problem(name, "missing-yaml", yaml_path.name, "file not found"))
        return []
    try:
        return bag_signatures(yaml_path)
    except (ValueError, yaml.YAMLError, OSError) as exc:
        report.problems.append(Problem(name, "bad-yaml", yaml_path.name, str(exc).splitlines()[0]))
        return []


def _check_weight(name: str, sig: str, files: list[Path], report: RepoCheck) -> None:
    if not files:
        report.problems.append(
            Problem(name, "missing-weights", f"{sig}-<sha8>.th", "weight file not found")
        )
        return
    if len(files) > 1:
        listed = ", ".join(p.name for p in files)
        report.problems.append(
            Problem(name, "duplicate-weights", listed, "keep one file per signature")
        )
        return
    path = files[0]
    stem = path.stem
    expected = stem.rsplit("-", 1)[1] if "-" in stem else ""
    if expected:
        actual = file_checksum(path, len(expected))
        if actual != expected:
            report.problems.append(
                Problem(
                    name, "checksum", path.name, f"sha256 starts {actual}, name says {expected}"
                )
            )
            return
    report.files_ok.append(path.name)


def _load_sources(root: Path, name: str, report: RepoCheck) -> tuple[str, ...] | None:
    from demucs.pretrained import get_model

    try:
        # demucs prints through tqdm/warnings for some models; keep the check's output clean.
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            model = get_model(name, repo=root)
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        report.problems.append(Problem(name, "load", f"{name}.yaml", detail))
        return None
    except SystemExit as exc:
        # demucs.utils.fatal() exits on some loading errors.
        report.problems.append(Problem(name, "load", f"{name}.yaml", f"demucs gave up: {exc}"))
        return None
    return tuple(model.sources)
