"""The grain input pipeline: mixture proportions, determinism, process sharding, exact resume, eval padding."""

import collections

import numpy as np
import pytest

from distill_jax.data import pipeline


def make_sources(sizes):
    rng = np.random.default_rng(0)
    out = {}
    for d, n in sizes.items():
        out[d] = [
            {
                "id": f"{d}-{i}",
                "domain": d,
                "inputs": rng.integers(3, 200, size=rng.integers(2, 12)).astype(np.int32),
                "targets": np.append(rng.integers(3, 200, size=rng.integers(1, 6)), 1).astype(np.int32),
            }
            for i in range(n)
        ]
    return out


SIZES = {"head": 400, "mid": 100, "tail": 12}
INDEX = {d: i for i, d in enumerate(sorted(SIZES))}


def build(weights, seed=0, **kw):
    kw = {"batch_size": 8, "max_input_len": 16, "max_target_len": 8, **kw}
    return pipeline.build_train_dataset(make_sources(SIZES), weights, INDEX, seed=seed, **kw)


def take(it, n):
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("mixture", ["natural", "uniform", "temperature:2"])
def test_mixture_proportions_within_tolerance(mixture):
    weights = pipeline.mixture_weights(SIZES, mixture)
    assert sum(weights.values()) == pytest.approx(1.0)
    counts = collections.Counter()
    for batch in take(iter(build(weights)), 200):
        counts.update(batch["decoder_domain_ids"][:, 0].tolist())
    total = sum(counts.values())
    for d, w in weights.items():
        assert counts[INDEX[d]] / total == pytest.approx(w, abs=0.02), (d, counts)


def test_mixture_weight_rules():
    assert pipeline.mixture_weights({"a": 30, "b": 10}, "natural") == pytest.approx({"a": 0.75, "b": 0.25})
    assert pipeline.mixture_weights({"a": 30, "b": 10}, "uniform") == pytest.approx({"a": 0.5, "b": 0.5})
    w = pipeline.mixture_weights({"a": 400, "b": 100}, "temperature:2")
    assert w["a"] / w["b"] == pytest.approx(2.0)
    assert pipeline.mixture_weights({"a": 3, "b": 1}, "explicit", {"b": 1.0}) == {"a": 0.0, "b": 1.0}
    with pytest.raises(ValueError, match="not in the data"):
        pipeline.mixture_weights({"a": 3}, "explicit", {"zzz": 1.0})
    with pytest.raises(ValueError, match="temperature"):
        pipeline.mixture_weights({"a": 3}, "temperature:x")
    with pytest.raises(ValueError, match="natural, uniform"):
        pipeline.mixture_weights({"a": 3}, "bogus")


def test_batches_have_fixed_shapes_and_consistent_features():
    batch = next(iter(build(pipeline.mixture_weights(SIZES, "uniform"))))
    assert batch["encoder_input_tokens"].shape == (8, 16)
    assert batch["decoder_target_tokens"].shape == (8, 8)
    assert batch["decoder_domain_ids"].shape == (8, 8)
    np.testing.assert_array_equal(batch["encoder_segment_ids"], batch["encoder_input_tokens"] != 0)
    np.testing.assert_array_equal(batch["decoder_loss_weights"], batch["decoder_target_tokens"] != 0)
    # Every target ends in EOS (1) even when cut to max_target_len.
    for row in batch["decoder_target_tokens"]:
        assert row[row != 0][-1] == 1


def test_same_seed_same_stream_other_seed_differs():
    w = pipeline.mixture_weights(SIZES, "natural")
    a = take(iter(build(w, seed=3)), 5)
    b = take(iter(build(w, seed=3)), 5)
    c = take(iter(build(w, seed=4)), 5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["encoder_input_tokens"], y["encoder_input_tokens"])
    assert any(not np.array_equal(x["encoder_input_tokens"], z["encoder_input_tokens"]) for x, z in zip(a, c))


def test_iterator_state_resumes_exactly():
    w = pipeline.mixture_weights(SIZES, "natural")
    it = iter(build(w))
    take(it, 7)
    state = it.get_state()
    expected = take(it, 5)
    fresh = iter(build(w))
    fresh.set_state(state)
    for x, y in zip(expected, take(fresh, 5)):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_device_prefetcher_state_tracks_consumed_batches_not_read_ahead():
    w = pipeline.mixture_weights(SIZES, "natural")
    it = iter(build(w))
    prefetcher = pipeline.DevicePrefetcher(it, lambda b: b, buffer_size=4)
    consumed = take(prefetcher, 3)
    state = prefetcher.state
    expected_next = next(prefetcher)
    prefetcher.close()
    fresh = iter(build(w))
    fresh.set_state(state)
    np.testing.assert_array_equal(next(fresh)["encoder_input_tokens"], expected_next["encoder_input_tokens"])
    assert len(consumed) == 3


def test_device_prefetcher_reraises_pipeline_errors():
    def broken():
        yield {"x": np.zeros(2)}
        raise RuntimeError("corrupt shard")

    class It:
        def __init__(self):
            self.g = broken()

        def __next__(self):
            return next(self.g)

        def get_state(self):
            return {}

    prefetcher = pipeline.DevicePrefetcher(It(), lambda b: b)
    next(prefetcher)
    with pytest.raises(RuntimeError, match="corrupt shard"):
        next(prefetcher)
    prefetcher.close()


def test_global_batches_hold_the_same_examples_for_any_process_count():
    w = pipeline.mixture_weights(SIZES, "natural")

    def rows(batch):
        return sorted(map(tuple, np.concatenate([batch["encoder_input_tokens"], batch["decoder_target_tokens"]], 1)))

    single = take(iter(build(w, batch_size=8)), 4)
    shards = [take(iter(build(w, batch_size=4, shard_index=i, shard_count=2)), 4) for i in range(2)]
    for k in range(4):
        both = {key: np.concatenate([shards[0][k][key], shards[1][k][key]]) for key in single[k]}
        assert rows(both) == rows(single[k])


def test_eval_batches_cover_each_row_once_and_pad_equally_across_processes():
    sources = make_sources({"a": 10, "b": 3})
    index = {"a": 0, "b": 1}
    per_process = [
        pipeline.build_eval_batches(
            sources, index, batch_size=4, max_input_len=16, max_target_len=8, shard_index=p, shard_count=2
        )
        for p in range(2)
    ]
    assert len(per_process[0]) == len(per_process[1])
    real = collections.Counter()
    for batches in per_process:
        for b in batches:
            keep = b["decoder_loss_weights"].sum(-1) > 0
            real.update(b["decoder_domain_ids"][keep, 0].tolist())
    assert real == {0: 10, 1: 3}
    capped = pipeline.build_eval_batches(
        sources, index, batch_size=4, max_input_len=16, max_target_len=8, max_per_domain=2
    )
    assert sum(int((b["decoder_loss_weights"].sum(-1) > 0).sum()) for b in capped) == 4


def test_domain_with_weight_but_no_examples_is_a_clear_error():
    with pytest.raises(ValueError, match="no examples"):
        pipeline.build_train_dataset(
            {"x": []}, {"x": 1.0}, {"x": 0}, seed=0, batch_size=2, max_input_len=8, max_target_len=8
        )


def test_packing_keeps_every_token_and_its_domain_and_fills_rows():
    w = pipeline.mixture_weights(SIZES, "natural")
    sources = make_sources(SIZES)
    packed = take(iter(build(w, pack=True, max_input_len=32, max_target_len=16)), 6)
    padded = take(iter(build(w, max_input_len=32, max_target_len=16)), 6)
    for batch in packed:
        assert batch["encoder_input_tokens"].shape == (8, 32)
        for row in range(8):
            segs = batch["decoder_segment_ids"][row]
            for seg in set(segs[segs > 0].tolist()):
                tokens = batch["decoder_target_tokens"][row][segs == seg]
                domains = batch["decoder_domain_ids"][row][segs == seg]
                positions = batch["decoder_positions"][row][segs == seg]
                assert tokens[-1] == 1 and len(set(domains.tolist())) == 1
                np.testing.assert_array_equal(positions, np.arange(len(tokens)))
                # The segment is exactly some source example's targets, in its own domain.
                domain = sorted(SIZES)[domains[0]]
                assert any(np.array_equal(tokens, r["targets"]) for r in sources[domain])

    def real_tokens(batches):
        return sum(float(b["decoder_loss_weights"].sum()) for b in batches)

    assert real_tokens(packed) > 1.5 * real_tokens(padded)  # More real tokens in the same shapes.


def test_packed_iterator_resumes_exactly():
    w = pipeline.mixture_weights(SIZES, "natural")
    it = iter(build(w, pack=True))
    take(it, 3)
    state = it.get_state()
    expected = take(it, 3)
    fresh = iter(build(w, pack=True))
    fresh.set_state(state)
    for x, y in zip(expected, take(fresh, 3)):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
