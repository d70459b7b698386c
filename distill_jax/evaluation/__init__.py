"""Evaluation of a student: per-domain loss, token accuracy and exact match from greedy decoding, and reports."""
