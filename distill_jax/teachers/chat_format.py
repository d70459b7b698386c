"""The chat-completions wire format of the OpenAI teacher: prompts from templates, and what a reply holds."""

from __future__ import annotations

from distill_jax.teachers.base import Example, Request


def completion(body: dict) -> tuple[str, str]:
    """(stripped content, finish_reason) of the first choice; ("", "") when there is none."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "", ""
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str) or not content.strip():
        return "", ""
    return content.strip(), choices[0].get("finish_reason") or ""


def billed_usage(body: dict, prompt_bound: int, content: str, cap: int) -> tuple[int, int]:
    """(input, output) tokens the provider billed; without `usage`, conservative bounds (prompt bytes,
    completion bytes -- or the cap when there is no completion to measure)."""
    usage = body.get("usage")
    if isinstance(usage, dict):
        tin, tout, total = (usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
        if _is_int(tin) and _is_int(tout):
            return tin, tout
        if _is_int(total):  # Only a total: count it as output, the dearer side.
            return 0, total
    return prompt_bound, min(cap, len(content.encode("utf-8"))) if content else cap


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def render_prompt(templates: dict[str, str], request: Request) -> str:
    """The prompt of `request` from {kind: template} (the teacher.*_prompt knobs)."""
    template = templates[request.kind]
    if request.kind == "annotate":
        example = request.example
        return template.format(input=example.input, answer=example.answer or "unknown", domain=request.domain)
    if request.kind == "paraphrase":
        return template.format(input=request.example.input, k=request.k, domain=request.domain)
    examples = "\n\n".join(_render_seed(s) for s in request.seeds)
    return template.format(domain=request.domain, examples=examples)


def _render_seed(seed: Example) -> str:
    if seed.answer is None:
        return f"Question: {seed.input}"
    return f"Question: {seed.input}\nAnswer: {seed.answer}"


def check_template(name: str, template: str, **fields: str) -> None:
    try:
        template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"teacher.{name} is not a valid template ({type(e).__name__}: {e}); its fields are {', '.join(fields)} "
            "and literal braces are written {{ }}"
        ) from None
