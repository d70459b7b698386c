"""On-disk layout of a prepared corpus: per-domain ArrayRecord shards as a TFDS dataset.

    OUT/manifest.json            what was prepared, from what, with which tokenizer (FORMAT_VERSION)
    OUT/rejects.jsonl            one JSON object per rejected input row
    OUT/distill_corpus/1.0.0/    TFDS dataset (array_record), one split per domain

Each example is ``{"id": Text, "domain": Text, "inputs": int32[None], "targets": int32[None]}``
with EOS included. Using a TFDS dataset (rather than bare ArrayRecord files) gives, without
TensorFlow, random-access sources for grain via ``tfds.data_source("distill_corpus",
data_dir=OUT, split=...)`` or ``tfds.builder_from_directory(...).as_data_source()``, plus
per-split example counts and shard lengths recorded by TFDS itself.

OUT may be gs:// or s3:// (distill_jax/storage.py). prepare uploads the files object by object with
manifest.json last, so a manifest means a complete corpus. Readers stage a local copy first
(`local_copy`): ArrayRecord's reader opens local files only, and a training run reads each example
many times (random access, several epochs), so one sequential download per host beats remote reads.

Writing is two-phase because a corpus interleaves domains but TFDS writes one split at a time:
prepare appends tokenized examples to an :class:`ExampleSpill` (one temp file, per-domain
offsets), then :func:`write_shards` streams each domain back out of it. Memory stays at a few
bytes per example rather than the examples themselves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import struct
import unicodedata
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from absl import logging

from distill_jax import storage
from distill_jax.data.corpus import CorpusError

FORMAT_VERSION = 1
TFDS_NAME = "distill_corpus"
TFDS_VERSION = "1.0.0"
MANIFEST_FILE = "manifest.json"
REJECTS_FILE = "rejects.jsonl"
# Shard files are "distill_corpus-<split>.array_record-00000-of-00001": well under the usual 255-byte
# file-name limit with room for TFDS's suffixes (and the _N collision suffix).
MAX_SPLIT_CHARS = 64
_RESERVED_SPLITS = {"all"}  # tfds.Split.ALL means "every split" in read instructions
_HEADER = struct.Struct("<III")  # spill record: byte lengths of id, inputs, targets
_MANIFEST_KEYS = ("tfds_name", "tfds_version", "tokenizer", "domains", "counts", "content_hash")


def tfds_dir(prepared_dir: str | os.PathLike) -> Path:
    """Directory of the TFDS dataset inside a prepared corpus."""
    return Path(prepared_dir) / TFDS_NAME / TFDS_VERSION


def split_names(domains: Iterable[str]) -> dict[str, str]:
    """Maps each domain to a unique TFDS split name of ``[a-z0-9_]`` characters.

    Accents are folded ("Émoji" -> "emoji"); domains are taken in sorted order so the mapping
    does not depend on input row order; collisions ("Number Theory" / "number-theory") get
    ``_2``, ``_3``... suffixes. A domain is a label, not a path: the split name becomes part of
    each shard's file name, so names longer than MAX_SPLIT_CHARS are cut and end in a hash of the
    whole domain (a 213-character domain made "File name too long"). The manifest keeps the
    original domain next to its split, and readers go through that mapping.
    """
    taken: set[str] = set(_RESERVED_SPLITS)
    out = {}
    for domain in sorted(set(domains)):
        ascii_name = unicodedata.normalize("NFKD", domain).encode("ascii", "ignore").decode().lower()
        base = re.sub(r"[^a-z0-9]+", "_", ascii_name).strip("_") or "domain"
        if len(base) > MAX_SPLIT_CHARS:
            digest = hashlib.sha256(domain.encode("utf-8", "surrogatepass")).hexdigest()[:10]
            base = f"{base[: MAX_SPLIT_CHARS - 11].rstrip('_')}_{digest}"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        out[domain] = name
    return out


class ExampleSpill:
    """Append-only temp file of tokenized examples, readable back one domain at a time.

    Record layout: little-endian uint32 byte lengths of (id, inputs, targets), then the UTF-8 id
    and the int32 token bytes; a fixed binary layout is several times faster than pickle here.
    """

    def __init__(self, path: str | os.PathLike):
        self._path = Path(path)
        self._file: BinaryIO = open(self._path, "wb")
        self._offsets: dict[str, array] = {}

    def append(self, row_id: str, domain: str, inputs: np.ndarray, targets: np.ndarray) -> None:
        self._offsets.setdefault(domain, array("q")).append(self._file.tell())
        parts = (row_id.encode("utf-8"), inputs.astype("<i4").tobytes(), targets.astype("<i4").tobytes())
        self._file.write(_HEADER.pack(*map(len, parts)) + b"".join(parts))

    def domains(self) -> list[str]:
        return sorted(self._offsets)

    def examples(self, domain: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(key, example) pairs of one domain in append order, as TFDS split generators yield."""
        self._file.flush()
        with open(self._path, "rb") as f:
            for offset in self._offsets[domain]:
                f.seek(offset)
                sizes = _HEADER.unpack(f.read(_HEADER.size))
                row_id, inputs, targets = (f.read(n) for n in sizes)
                yield (
                    row_id.decode("utf-8"),
                    {
                        "id": row_id.decode("utf-8"),
                        "domain": domain,
                        "inputs": np.frombuffer(inputs, "<i4").astype(np.int32),
                        "targets": np.frombuffer(targets, "<i4").astype(np.int32),
                    },
                )

    def close(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)


def _builder_class():
    """Defined lazily so that importing this module does not import tensorflow_datasets."""
    import tensorflow_datasets as tfds

    class DistillCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        # skip_registration: readers open the dataset from its files, never through this class.
        VERSION = tfds.core.Version(TFDS_VERSION)

        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls) -> None:
            # No checksums/metadata files live beside this code. TFDS's own lookup for a class
            # inside a package imports `importlib_resources`, which tfds 4.9.10 does not declare.
            return None

        def __init__(self, *, split_generators: Mapping[str, Iterable], **kwargs: Any):
            self._split_iterables = split_generators
            super().__init__(**kwargs)

        def _info(self) -> tfds.core.DatasetInfo:
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "id": tfds.features.Text(),
                        "domain": tfds.features.Text(),
                        "inputs": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                        "targets": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    }
                ),
                description="Tokenized teacher outputs for distillation; one split per domain.",
            )

        def _split_generators(self, dl_manager: Any) -> dict[str, Iterable]:
            return dict(self._split_iterables)

        def _generate_examples(self, **kwargs: Any) -> Iterator:
            raise AssertionError("split generators are given to the constructor")

        # TFDS prints "Downloading and preparing ... to <temp dir>" to stdout; log it instead so
        # that a CLI's stdout carries only its own report.
        def _log_download_bytes(self) -> None:
            logging.info("writing TFDS shards to %s", self.data_dir)

        def _log_download_done(self) -> None:
            logging.info("wrote TFDS shards to %s", self.data_dir)

    return DistillCorpus


def write_shards(prepared_dir: str | os.PathLike, spill: ExampleSpill, splits: Mapping[str, str]) -> None:
    """Writes ``prepared_dir/distill_corpus/1.0.0`` with one split per domain of ``spill``.

    ``splits`` maps domain -> split name (see :func:`split_names`). TFDS shuffles examples
    within a split deterministically by id, so shard order does not follow input order.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.utils import tqdm_utils

    builder = _builder_class()(
        split_generators={splits[d]: spill.examples(d) for d in spill.domains()},
        data_dir=os.fspath(prepared_dir),
        file_format="array_record",
    )
    was_active = tqdm_utils._active  # tfds keeps its progress switch as module state
    tfds.display_progress_bar(False)  # Its per-split bars are noise; prepare shows its own progress.
    try:
        builder.download_and_prepare(
            download_dir=os.path.join(prepared_dir, "tfds_downloads"),
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
    finally:
        tfds.display_progress_bar(was_active)
    # TFDS creates (empty) download dirs even when nothing is downloaded.
    shutil.rmtree(Path(prepared_dir) / "tfds_downloads", ignore_errors=True)


def load_manifest(prepared_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks ``prepared_dir/manifest.json``; every failure names the directory."""
    path = storage.join(prepared_dir, MANIFEST_FILE)
    try:
        manifest = json.loads(storage.read_text(path))
    except FileNotFoundError as err:
        raise CorpusError(
            f"{prepared_dir}: no {MANIFEST_FILE}; it is not a prepared corpus (run prepare into it, or check the path)"
        ) from err
    except (OSError, ValueError) as err:
        raise CorpusError(f"{path}: unreadable or corrupt ({err}); re-run prepare with overwrite") from err
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise CorpusError(
            f"{path}: format_version {version!r} is not {FORMAT_VERSION}, the one this "
            "distill_jax reads; re-run prepare with this version"
        )
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    domains = manifest.get("domains")
    bad_domains = (
        [d for d, v in domains.items() if not isinstance(v, dict) or not {"split", "num_examples"} <= v.keys()]
        if isinstance(domains, dict)
        else ["(domains is not an object)"]
    )
    if missing or bad_domains:
        raise CorpusError(
            f"{path}: corrupt manifest (missing keys {missing}, bad domain entries "
            f"{bad_domains}); re-run prepare with overwrite"
        )
    return manifest


@dataclasses.dataclass
class DomainSource(Sequence):
    """Random-access examples of one domain with ``id``/``domain`` decoded to str.

    Wraps the TFDS ArrayRecord data source (picklable, so grain workers can use it);
    ``inputs``/``targets`` are int32 numpy arrays with EOS included.
    """

    domain: str
    split: str
    source: Any

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not -len(self) <= index < len(self):  # the Sequence protocol needs IndexError
            raise IndexError(f"{self.domain}: index {index} out of range ({len(self)} examples)")
        return _decode(self.source[index % len(self)])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [_decode(x) for x in self.source.__getitems__(indices)]


def _decode(example: dict[str, Any]) -> dict[str, Any]:
    example["id"] = example["id"].decode("utf-8")
    example["domain"] = example["domain"].decode("utf-8")
    return example


def open_domain_sources(prepared_dir: str | os.PathLike) -> dict[str, DomainSource]:
    """Domain name -> random-access source of its examples, checked against the manifest."""
    import tensorflow_datasets as tfds

    manifest = load_manifest(prepared_dir)
    if not manifest["domains"]:
        return {}
    prepared_dir = local_copy(prepared_dir, manifest)
    try:
        builder = tfds.builder_from_directory(os.fspath(tfds_dir(prepared_dir)))
    except Exception as err:  # tfds raises several types for missing/corrupt metadata
        raise CorpusError(
            f"{tfds_dir(prepared_dir)}: cannot open the shards ({err}); re-run prepare with overwrite"
        ) from err
    sources = {}
    for domain, info in manifest["domains"].items():
        source = builder.as_data_source(split=info["split"])
        if len(source) != info["num_examples"]:
            raise CorpusError(
                f"{prepared_dir}: split {info['split']!r} has {len(source)} examples "
                f"but the manifest says {info['num_examples']}; re-run prepare"
            )
        sources[domain] = DomainSource(domain, info["split"], source)
    return sources


def local_copy(prepared_dir: str | os.PathLike, manifest: dict[str, Any]) -> str:
    """`prepared_dir` itself when local; for gs:// / s3:// a complete local copy, downloaded once per
    host and content hash (a corpus re-prepared under the same URL gets a new copy)."""
    if not storage.is_remote(prepared_dir):
        return os.fspath(prepared_dir)
    return storage.staged_tree(os.fspath(prepared_dir), "shards", manifest["content_hash"][:16], MANIFEST_FILE)
