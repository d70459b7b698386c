"""prepare's options (what is read, how rows are formatted, tokenized and cut) and its summary.

Split from prepare.py, which orchestrates; ``prepare`` re-exports both classes.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any

from distill_jax.data import shards
from distill_jax.data.corpus import CONTROL_CHARACTERS, CorpusError, FieldMapping

DEFAULT_TARGET_TEMPLATE = "{rationale} So the answer is {target}."
DEFAULT_PLAIN_TARGET_TEMPLATE = "{target}"
TEMPLATE_FIELDS = ("rationale", "target", "input", "domain")
TRUNCATE_CHOICES = ("none", "input", "target", "both")


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """How rows are read, formatted and tokenized; everything but ``progress`` is hashed.

    ``target_template`` formats rows that carry a rationale (rationale distillation: the
    student learns to produce the teacher's reasoning and then the answer);
    ``plain_target_template`` formats rows without one and cannot use ``{rationale}``. Lengths
    count tokens including EOS.
    """

    mapping: FieldMapping = FieldMapping()
    tokenizer_kind: str = "byt5"
    tokenizer_path: str = ""
    max_input_len: int = 512
    max_target_len: int = 512
    target_template: str = DEFAULT_TARGET_TEMPLATE
    plain_target_template: str = DEFAULT_PLAIN_TARGET_TEMPLATE
    drop_duplicate_examples: bool = True
    default_domain: str = "default"
    columns: tuple[str, ...] = ()  # CSV/TSV without a header row: its column names.
    truncate: str = "none"  # none | input | target | both (see TRUNCATE_CHOICES)
    progress: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> PrepareOptions:
        """From a distill_jax.config ConfigDict (its `tokenizer` and `prepare` sections)."""
        fields = {k: (v or None) for k, v in cfg.prepare.fields.items()}
        return cls(
            mapping=FieldMapping(**fields),
            tokenizer_kind=cfg.tokenizer.kind,
            tokenizer_path=cfg.tokenizer.path,
            max_input_len=cfg.prepare.max_input_len,
            max_target_len=cfg.prepare.max_target_len,
            target_template=cfg.prepare.target_template,
            plain_target_template=cfg.prepare.plain_target_template,
            drop_duplicate_examples=cfg.prepare.drop_duplicate_examples,
            default_domain=cfg.prepare.default_domain,
            columns=tuple(c.strip() for c in cfg.prepare.columns.split(",") if c.strip()),
            truncate=cfg.prepare.truncate,
        )

    def check(self) -> None:
        """Raises CorpusError for a bad template or limit, before any input is read."""
        _check_template("target_template", self.target_template, TEMPLATE_FIELDS)
        _check_template(
            "plain_target_template", self.plain_target_template, tuple(f for f in TEMPLATE_FIELDS if f != "rationale")
        )
        for name in ("max_input_len", "max_target_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
                raise CorpusError(f"{name}={getattr(self, name)!r}: must be an int >= 2 (one token plus EOS)")
        if not self.default_domain.strip() or CONTROL_CHARACTERS.search(self.default_domain):
            raise CorpusError(
                f"default_domain {self.default_domain!r} must be a non-empty name without control characters"
            )
        if self.truncate not in TRUNCATE_CHOICES:
            raise CorpusError(f"truncate={self.truncate!r}: must be one of {', '.join(TRUNCATE_CHOICES)}")
        if len(set(self.columns)) != len(self.columns) or any(not c for c in self.columns):
            raise CorpusError(f"columns {list(self.columns)}: give each column a distinct, non-empty name")

    def truncates(self, field: str) -> bool:
        """Whether over-long ``field`` ("input" or "target") rows are cut rather than rejected."""
        return self.truncate in (field, "both")

    def hashed(self) -> dict[str, Any]:
        """The options that change the output (not the tokenizer path: its fingerprint counts).

        Options added later are hashed only when set, so corpora prepared before they existed keep
        their content hash (a re-run stays a no-op instead of asking for overwrite).
        """
        out = dataclasses.asdict(self)
        del out["progress"], out["tokenizer_path"]
        for name, default in (("columns", ()), ("truncate", "none")):
            if out[name] == default:
                del out[name]
        return out


def _check_template(name: str, template: str, allowed: tuple[str, ...]) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise CorpusError(
            f"{name} {template!r} is not a valid format string ({err}); write "
            "fields as {target} and literal braces as {{ }}"
        ) from err
    bad = [f for f in fields if f not in allowed]
    if bad or "target" not in fields:
        raise CorpusError(
            f"{name} {template!r}: fields must be among {{{', '.join(allowed)}}} and include {{target}} (got {fields})"
        )
    try:
        template.format(**{f: "x" for f in allowed})
    except (ValueError, IndexError) as err:
        raise CorpusError(
            f"{name} {template!r} cannot be formatted ({err}); drop the format spec or conversion"
        ) from err


@dataclasses.dataclass
class PrepareSummary:
    """Counts of one prepare run (or of the existing output when it was a no-op)."""

    output_dir: str
    was_noop: bool
    read: int
    written: int
    blank: int
    rejected: dict[str, int]
    domains: dict[str, dict[str, Any]]
    truncated: dict[str, int] = dataclasses.field(default_factory=dict)  # rows cut to fit, by field

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @classmethod
    def from_manifest(cls, output_dir: str, manifest: dict[str, Any], was_noop: bool) -> PrepareSummary:
        counts = manifest["counts"]
        return cls(
            output_dir,
            was_noop,
            counts["read"],
            counts["written"],
            counts["blank"],
            dict(counts["rejected"]),
            manifest["domains"],
            dict(counts.get("truncated", {})),
        )

    def format_table(self) -> str:
        """Console report: totals, rejects by reason, and one line per domain."""
        head = (
            f"{self.output_dir}: up to date (same inputs, options and tokenizer), nothing rewritten"
            if self.was_noop
            else f"{self.output_dir}: prepared"
        )
        lines = [
            head,
            f"  rows read {self.read} = written {self.written} + rejected "
            f"{self.rejected_total}   (blank lines skipped: {self.blank})",
        ]
        if any(self.truncated.values()):
            lines.append(
                "  truncated to max_*_len (EOS kept): "
                + ", ".join(f"{field} {n}" for field, n in sorted(self.truncated.items()) if n)
            )
        if self.rejected:
            lines.append(
                "  rejected: "
                + ", ".join(f"{r} {n}" for r, n in sorted(self.rejected.items()))
                + f"   (details: {shards.REJECTS_FILE})"
            )
        width = max([len("domain")] + [len(d) for d in self.domains])
        split_width = max([len("split")] + [len(d["split"]) for d in self.domains.values()])
        lines.append(f"  {'domain':<{width}}  {'split':<{split_width}} {'examples':>9} {'tokens':>12}")
        for domain, info in sorted(self.domains.items()):
            lines.append(
                f"  {domain:<{width}}  {info['split']:<{split_width}} "
                f"{info['num_examples']:>9} {info['num_tokens']:>12}"
            )
        total = sum(d["num_tokens"] for d in self.domains.values())
        lines.append(f"  {'total':<{width}}  {'':<{split_width}} {self.written:>9} {total:>12}")
        return "\n".join(lines)
