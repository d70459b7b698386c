"""Teachers: one interface (`base.Teacher`) for every source of teacher outputs.

  base.py     requests, responses and the `Teacher` protocol the stage scheduler calls.
  pool.py     stored, pre-generated teacher outputs on disk (the main offline mode).
  program.py  the demo's teacher: knows the generated tasks' answers and can make new examples.
  openai.py   any OpenAI-compatible chat-completions endpoint, with a persistent response cache.
  local.py    a bigger seq2seq checkpoint of this project, decoding with the `generate` job.
  http_json.py       one request to an OpenAI-compatible endpoint, its failure classified (retry? billed?).
  chat_format.py     prompts from templates; the completion and billed usage of a reply.
  response_cache.py  usable answers by request content (SQLite), with the usage they were billed.
  moderation.py      an OpenAI-compatible moderation endpoint (paraphrase-corpus's content filter).

  spend.py    budgets in calls, tokens or dollars; every attempt opened before it is sent, settled after.
  ledger.py   the attempt ledger (JSONL, append-only) that spend meters.

Teachers produce and parse outputs and meter what they spend (the HTTP teacher and moderation open
every attempt in `spend` before sending it); checking an annotation against the gold answer is the
scheduler's job.
"""
