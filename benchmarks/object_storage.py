"""Shards on object storage: prepare's upload, the per-host staging download, and reads, vs local disk.

Starts a moto S3 server on 127.0.0.1 (tests/object_store.py), prepares the generated demo corpus
once locally and once to s3://, then measures
- upload: `prepare --output_dir=s3://...` wall seconds minus the local prepare's (the publish step);
- staging: `shards.local_copy` of the s3 corpus (one sequential download per host), MB/s;
- remote reads: every shard file read whole through fsspec (what reading ArrayRecord through the path
  layer would cost at best, one request per file, no random access), MB/s, vs the same from local disk;
- examples/s iterating every example of the staged copy and of the local one (the same files: equal
  by construction, printed to show staging costs nothing after the download);
- a checkpoint save + restore of the tiny preset's train state to s3 vs local disk.

    python benchmarks/object_storage.py [--num_train 20000] [--copies 10] [--json OUT.json]

--copies repeats the generated rows under new ids and a suffixed input (the demo generator runs out
of distinct inputs past ~20000 rows), for a corpus large enough to time transfers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from object_store import S3Server  # noqa: E402


def _size_mb(directory: str) -> float:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file()) / 1e6


def _shard_mb(directory: str) -> float:
    return sum(p.stat().st_size for p in Path(directory).rglob("*.array_record*") if p.is_file()) / 1e6


def _iterate(prepared: str) -> tuple[int, float]:
    from distill_jax.data import shards

    start = time.perf_counter()
    n = sum(len(list(source)) for source in shards.open_domain_sources(prepared).values())
    return n, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_train", type=int, default=20000)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="object_storage_bench_"))
    server = S3Server(root)
    os.environ.update(server.env, DISTILL_JAX_STAGING_DIR=str(root / "staging"))
    try:
        import fsspec

        from distill_jax import storage
        from distill_jax.data import shards
        from distill_jax.data.demo_corpus import write_demo_corpus
        from distill_jax.data.prepare import PrepareOptions, prepare_corpus
        from distill_jax.presets import demo_config

        bucket = server.new_bucket()
        generated = write_demo_corpus(str(root / "corpus"), seed=0, num_train=args.num_train)["train"]
        rows = [json.loads(line) for line in Path(generated).read_text().splitlines()]
        corpus = str(root / "corpus" / "copies.jsonl")
        with open(corpus, "w") as f:
            for k in range(args.copies):
                # A suffix keeps copies distinct (prepare drops repeated input/target pairs as duplicates).
                f.writelines(
                    json.dumps({**row, "id": f"{row['id']}-{k}", "input": f"{row['input']} #{k}"}) + "\n"
                    for row in rows
                )
        options = PrepareOptions.from_config(demo_config())
        start = time.perf_counter()
        prepare_corpus([corpus], str(root / "local"), options)
        local_s = time.perf_counter() - start
        url = f"s3://{bucket}/data/train"
        start = time.perf_counter()
        prepare_corpus([corpus], url, options)
        remote_s = time.perf_counter() - start
        mb = _size_mb(str(root / "local"))

        start = time.perf_counter()
        staged = shards.local_copy(url, shards.load_manifest(url))
        staging_s = time.perf_counter() - start

        files = sorted(p for p in (root / "local").rglob("*.array_record*") if p.is_file())
        start = time.perf_counter()
        local_bytes = sum(len(p.read_bytes()) for p in files)
        local_read_s = time.perf_counter() - start
        fs, prefix = fsspec.core.url_to_fs(url)
        remote_files = [k for k in fs.find(prefix) if ".array_record" in k]
        start = time.perf_counter()
        remote_bytes = sum(len(fs.cat_file(k)) for k in remote_files)
        remote_read_s = time.perf_counter() - start
        assert remote_bytes == local_bytes

        n_local, iter_local_s = _iterate(str(root / "local"))
        n_staged, iter_staged_s = _iterate(staged)

        import jax
        import numpy as np
        import orbax.checkpoint  # noqa: F401 - imported before timing

        from distill_jax.training.checkpoints import Checkpointer
        from distill_jax.training.run_setup import setup_run

        cfg = demo_config()
        cfg.data.train_dir = str(root / "local")
        run = setup_run(cfg)
        rng = np.random.default_rng(0)  # random bytes: nothing compresses better than real weights would
        state = jax.tree.map(
            lambda a: jax.device_put(rng.standard_normal(a.shape).astype(a.dtype), a.sharding), run.abstract_state
        )
        state_mb = sum(x.nbytes for x in jax.tree.leaves(state)) / 1e6
        checkpoint = {}
        for name, directory in (("local", str(root / "ckpt")), ("s3", f"s3://{bucket}/ckpt")):
            start = time.perf_counter()
            c = Checkpointer(directory, async_save=False)
            c.save(1, state, {"next_index": 0}, {"model": {}, "domain_names": [], "mixture_weights": {}})
            c.close()
            save_s = time.perf_counter() - start
            start = time.perf_counter()
            Checkpointer(directory).restore(1, run.abstract_state)
            checkpoint[name] = {"save_s": save_s, "restore_s": time.perf_counter() - start}
        result = {
            "rows": args.num_train * args.copies,
            "corpus_mb": mb,
            "shards_mb": _shard_mb(str(root / "local")),
            "prepare_local_s": local_s,
            "prepare_s3_s": remote_s,
            "staging_s": staging_s,
            "staging_mb_per_s": mb / staging_s,
            "local_read_mb_per_s": local_bytes / 1e6 / local_read_s,
            "s3_read_mb_per_s": remote_bytes / 1e6 / remote_read_s,
            "examples": n_local,
            "examples_per_s_local": n_local / iter_local_s,
            "examples_per_s_staged": n_staged / iter_staged_s,
            "state_mb": state_mb,
            "checkpoint": checkpoint,
            "staged_path_is_local": not storage.is_remote(staged),
        }
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
