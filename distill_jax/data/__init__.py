"""Teacher-corpus validation, tokenizers, per-domain ArrayRecord shards and the grain input pipeline."""
