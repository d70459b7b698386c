"""Evaluation of a student: per-domain loss, token accuracy and answers from greedy decoding on the same
rows, decoding-vs-scoring consistency, prediction scoring and reports."""
