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

Teachers only produce and parse outputs; spending is metered by `distill.spend` over
`distill.ledger` (the HTTP teacher and moderation open every attempt there before sending it), and
checking an annotation against the gold answer is the scheduler's job.
"""
