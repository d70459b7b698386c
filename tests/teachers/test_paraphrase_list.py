"""The paraphrase-list parser: every list shape a chat model uses, its chatter set aside with reasons."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_jax.teachers.paraphrase_list import DROP_REASONS, clean_item, clean_items, parse_paraphrase_list

# Words that cannot start chatter or a label, so generated sentences are unambiguous.
WORDS = ["cat", "sat", "mat", "river", "bank", "loan", "approved", "quickly", "news", "café", "naïve", "3.5", "42"]
FIRST = ["The", "An", "Every", "Their", "Rivers", "Loans", "Cats", "News"]
ENDS = [".", "!", "?", ""]


@st.composite
def sentence(draw):
    words = [draw(st.sampled_from(FIRST))] + draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=12))
    inner = draw(st.sampled_from(["", ",", " (really)", ' "quoted" word', " x's"]))
    return " ".join(words[:2]) + inner + " " + " ".join(words[2:]) + draw(st.sampled_from(ENDS))


def _strip(text):
    return " ".join(text.split())


RENDER = {
    "numbered_dot": lambda items: "\n".join(f"{i}. {s}" for i, s in enumerate(items, 1)),
    "numbered_paren": lambda items: "\n".join(f"{i}) {s}" for i, s in enumerate(items, 1)),
    "numbered_both": lambda items: "\n".join(f"({i}) {s}" for i, s in enumerate(items, 1)),
    "dash": lambda items: "\n".join(f"- {s}" for s in items),
    "star": lambda items: "\n".join(f"* {s}" for s in items),
    "bullet": lambda items: "\n".join(f"• {s}" for s in items),
    "labelled": lambda items: "\n".join(f"Paraphrase {i}: {s}" for i, s in enumerate(items, 1)),
    "label_own_line": lambda items: "\n\n".join(f"**Paraphrase {i}:**\n{s}" for i, s in enumerate(items, 1)),
    "bold_numbers": lambda items: "\n".join(f"**{i}.** {s}" for i, s in enumerate(items, 1)),
    "quoted": lambda items: "\n".join(f'{i}. "{s}"' if '"' not in s else f"{i}. {s}" for i, s in enumerate(items, 1)),
    "json": lambda items: json.dumps(items, ensure_ascii=False),
    "json_fenced": lambda items: "```json\n" + json.dumps(items, indent=2, ensure_ascii=False) + "\n```",
    "plain_lines": lambda items: "\n".join(items),
}


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(sentence(), min_size=1, max_size=6),
    shape=st.sampled_from(sorted(RENDER)),
    preamble=st.sampled_from(["", "Sure! Here are the paraphrases:", "Here are 5 paraphrases of the sentence:"]),
    epilogue=st.sampled_from(["", "I hope these help!", "Let me know if you need more."]),
    blank_lines=st.booleans(),
)
def test_every_shape_round_trips_with_chatter_set_aside(items, shape, preamble, epilogue, blank_lines):
    items = [_strip(s) for s in items]
    body = RENDER[shape](items)
    if blank_lines:
        body = body.replace("\n", "\n\n")
    reply = "\n\n".join(part for part in (preamble, body, epilogue) if part)
    parsed = parse_paraphrase_list(reply)
    assert list(parsed.items) == [clean_item(s) for s in items]
    assert [(d.text, d.reason) for d in parsed.dropped] == [(preamble, "preamble")] * bool(preamble) + [
        (epilogue, "epilogue")
    ] * bool(epilogue)
    assert parsed.blank == sum(not line.strip() for line in reply.splitlines())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_without_raising_into_clean_items_and_known_reasons(reply):
    parsed = parse_paraphrase_list(reply)
    for item in parsed.items:
        assert item and item == item.strip() and "\n" not in item
    assert all(d.reason in DROP_REASONS for d in parsed.dropped)
    # Reparsing what was kept, as a numbered list, keeps it (idempotence).
    numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(parsed.items, 1))
    assert parse_paraphrase_list(numbered).items == tuple(clean_item(s) for s in parsed.items)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40), max_size=8))
def test_line_mode_accounts_for_every_non_blank_line(lines):
    reply = "\n".join(line.replace("\r", " ") for line in lines)
    parsed = parse_paraphrase_list(reply)
    non_blank = sum(bool(line.strip()) for line in reply.splitlines())
    # A label on its own line and its sentence make one item from two lines; JSON arrays are not line-based.
    if not any(d.line == 0 for d in parsed.dropped) and "[" not in reply and "```" not in reply:
        assert len(parsed.items) + len(parsed.dropped) <= non_blank
        assert len(parsed.items) + len(parsed.dropped) >= non_blank - len(parsed.items)


REAL_WORLD = [
    (
        "Certainly! Here are five paraphrases of the sentence:\n\n"
        '1. "The company\'s revenue fell by 15% in the first quarter."\n'
        "2. In the first quarter, revenue at the company dropped 15 percent.\n"
        "3. First-quarter revenue declined by 15%.\n\n"
        "These paraphrases keep the original meaning while varying the structure.",
        [
            "The company's revenue fell by 15% in the first quarter.",
            "In the first quarter, revenue at the company dropped 15 percent.",
            "First-quarter revenue declined by 15%.",
        ],
        [("preamble", 1), ("epilogue", 7)],
    ),
    (
        "Paraphrase 1: He left early.\nExplanation: uses a synonym.\nParaphrase 2: He went away before the end.",
        ["He left early.", "He went away before the end."],
        [("commentary", 2)],
    ),
    (
        'Here you go:\n```json\n["It rained all day.", "Rain fell the whole day.", 7]\n```\nEnjoy!',
        ["It rained all day.", "Rain fell the whole day."],
        [("preamble", 1), ("not_text", 0), ("epilogue", 5)],
    ),
    (
        '[{"paraphrase": "Prices rose."}, {"text": "Costs went up."}, {"a": 1, "b": 2}]',
        ["Prices rose.", "Costs went up."],
        [("not_text", 0)],
    ),
    (
        "1.The sale closed.\n2)The deal was done.\n(3) 3.5 million shares changed hands.",
        ["The sale closed.", "The deal was done.", "3.5 million shares changed hands."],
        [],
    ),
    (
        "The sale closed on Monday.\nOn Monday, the sale was closed.",
        ["The sale closed on Monday.", "On Monday, the sale was closed."],
        [],
    ),
    ("Sure!\n\n1. ```\n2. A real one.", ["A real one."], [("preamble", 1), ("not_a_sentence", 3)]),
    (
        "Version 2.0 of the tool shipped today.\nThe tool's version 2.0 shipped today.",
        ["Version 2.0 of the tool shipped today.", "The tool's version 2.0 shipped today."],
        [],
    ),
    # Quotes that belong to the sentence stay.
    ('1. "Go," she said, "now."\n2. “Leave now,” she said.', ['"Go," she said, "now."', "“Leave now,” she said."], []),
]


@pytest.mark.parametrize("reply, items, dropped", REAL_WORLD)
def test_real_world_replies(reply, items, dropped):
    parsed = parse_paraphrase_list(reply)
    assert list(parsed.items) == items
    assert [(d.reason, d.line) for d in parsed.dropped] == dropped


def test_a_heading_before_bullets_is_named_and_labels_quotes_and_emphasis_go():
    parsed = parse_paraphrase_list("Formal:\n- The meeting was postponed.\n* They delayed the meeting.\n---")
    assert parsed.items == ("The meeting was postponed.", "They delayed the meeting.")
    assert [(d.text, d.reason) for d in parsed.dropped] == [("Formal:", "preamble"), ("---", "not_a_sentence")]
    assert clean_item('**Rephrased version:** "The vote passed."') == "The vote passed."
    assert clean_item("'''The vote passed.'''") == "The vote passed."
    assert clean_item('"The vote passed".') == "The vote passed."


def test_stored_lists_get_the_same_cleaning():
    parsed = clean_items(["1. The vote passed.", "  ", 3, "Option 2: It was approved."])
    assert parsed.items == ("The vote passed.", "It was approved.")
    assert [d.reason for d in parsed.dropped] == ["not_a_sentence", "not_text"]
