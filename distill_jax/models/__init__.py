"""The Flax T5-family student, its size presets, and decoding."""
