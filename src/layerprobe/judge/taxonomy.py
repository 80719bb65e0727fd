"""Taxonomies of behaviours a judge model counts in a trace, read from data files (docs/judge.md).

A taxonomy is a TOML (or JSON) file:

    name = "study"                       # letters, digits, . _ + = -
    title = "..."                        # optional
    system = "..."                       # optional system message, sent before every prompt
    [read]                               # how the count is read from a reply (these are the defaults)
    pattern = '<count>\\s*(\\d+)\\s*</count>'   # a regular expression with one group: the number
    take = "last"                        # first | last | only (several different counts: unparsable)
    [[behaviour]]
    name = "verification"
    title = "answer verification"        # optional
    prompt = '''... {problem} ... {trace} ...'''   # {trace} required; {problem}, {gold} optional
    # read = { ... } and system = "..." may be set per behaviour

Placeholders are replaced in one pass (a trace that contains "{problem}" stays as it is); any other
brace in a prompt is left alone. layerprobe ships `study` (the study's three behaviours) and `four`
(Gandhi et al.'s four), written for layerprobe.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from layerprobe._io import read_user_text
from layerprobe.errors import UserError
from layerprobe.rules import NAME_RULE, is_name

SHIPPED_DIR = Path(__file__).parent / "taxonomies"
SHIPPED = ("study", "four")
"""Taxonomies in the package (layerprobe's own prompts)."""
PLACEHOLDERS = ("trace", "problem", "gold")
_PLACEHOLDER = re.compile(r"\{(trace|problem|gold)\}")
DEFAULT_PATTERN = r"<count>\s*(\d+)\s*</count>"
MAX_COUNT = 10**9
"""A count above this is not read as a count (the reply is unparsable)."""
MAX_FILE_BYTES = 1_000_000
"""The largest taxonomy file read (the shipped ones are about 4 KB; a larger file is refused unread)."""
_STUDY_NAMES = ("response", "question", "solution", "completion", "reasoning", "text")


def _check_name(x: str) -> str:
    if not is_name(x):
        raise ValueError(f"{x!r} is not a valid name ({NAME_RULE})")
    return x


#: The name of a taxonomy or a behaviour (a key of the stored records, printed and shown).
_Name = Annotated[str, AfterValidator(_check_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ReadRule(_Strict):
    """How the count is read from the judge's reply."""

    pattern: str = DEFAULT_PATTERN
    """A regular expression whose one group captures the number."""
    take: Literal["first", "last", "only"] = "last"
    """Which match counts when there are several: the first, the last, or only one value (several
    different values make the reply unparsable)."""

    @field_validator("pattern")
    @classmethod
    def _one_group(cls, p: str) -> str:
        try:
            rx = re.compile(p)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from None
        if rx.groups != 1:
            raise ValueError(f"needs exactly one group (the number), has {rx.groups}")
        return p


class Behaviour(_Strict):
    """One behaviour: the prompt that asks for its count."""

    name: _Name
    """Its name (a key of the stored records)."""
    title: str = ""
    """How the report names it (default: the name)."""
    prompt: str
    """The question, with {trace} (and optionally {problem}, {gold})."""
    system: str | None = None
    """A system message for this behaviour (default: the taxonomy's)."""
    read: ReadRule | None = None
    """How its count is read (default: the taxonomy's)."""

    @field_validator("prompt")
    @classmethod
    def _has_trace(cls, p: str) -> str:
        if "{trace}" not in p:
            study = [n for n in _STUDY_NAMES if "{" + n + "}" in p]
            hint = f" (write {{trace}} where it has {{{study[0]}}})" if study else ""
            raise ValueError(
                f"has no {{trace}} placeholder, where the trace goes{hint}; placeholders: {{trace}}, {{problem}}, {{gold}}"
            )
        return p


class Taxonomy(_Strict):
    """A named set of behaviours."""

    name: _Name
    """Its name."""
    title: str = ""
    """A description."""
    system: str | None = None
    """System message sent before every prompt (None: none)."""
    read: ReadRule = Field(default_factory=ReadRule)
    """How counts are read, unless a behaviour says otherwise."""
    behaviour: list[Behaviour] = Field(min_length=1)
    """The behaviours, in the order they are shown."""

    @model_validator(mode="after")
    def _unique(self) -> Taxonomy:
        names = [b.name for b in self.behaviour]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"behaviour {twice[0]!r} is defined twice")
        if "total" in names:
            raise ValueError("'total' is reserved (the sum of every behaviour); give the behaviour another name")
        return self

    # -- use ---------------------------------------------------------------------------------------
    def titles(self) -> dict[str, str]:
        """Behaviour name -> title, in order."""
        return {b.name: b.title or b.name for b in self.behaviour}

    def uses(self, placeholder: str) -> bool:
        """Whether any prompt has `{placeholder}`."""
        return any("{" + placeholder + "}" in b.prompt for b in self.behaviour)

    def rule(self, behaviour: str) -> ReadRule:
        b = self._get(behaviour)
        return b.read or self.read

    def messages(self, behaviour: str, trace: str, problem: str = "", gold: str = "") -> list[dict[str, str]]:
        """The chat messages that ask the judge about `behaviour` in `trace`."""
        b = self._get(behaviour)
        values = {"trace": trace, "problem": problem, "gold": gold}
        user = _PLACEHOLDER.sub(lambda m: values[m.group(1)], b.prompt)
        system = b.system if b.system is not None else self.system
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]

    def sha1(self) -> str:
        """Content hash of the taxonomy (prompts, rules, names)."""
        return hashlib.sha1(json.dumps(self.model_dump(), sort_keys=True).encode("utf-8")).hexdigest()

    def _get(self, behaviour: str) -> Behaviour:
        for b in self.behaviour:
            if b.name == behaviour:
                return b
        raise KeyError(behaviour)


def load_taxonomy(spec: str, flag: str = "--taxonomy") -> tuple[Taxonomy, str]:
    """(taxonomy, source): a shipped taxonomy by name ("study", "four") or a TOML / JSON file of at most
    MAX_FILE_BYTES; source is "shipped" or the file's path. UserError naming `flag` when it cannot be used."""
    if spec in SHIPPED:
        path, source = SHIPPED_DIR / f"{spec}.toml", "shipped"
    else:
        path, source = Path(spec), spec
        if not path.is_file():
            raise UserError(f"{flag} {spec}: neither a shipped taxonomy ({', '.join(SHIPPED)}) nor a file")
    expected = "a TOML or JSON taxonomy: name and [[behaviour]] entries (docs/judge.md)"
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UserError(f"{flag} {spec}: cannot be read ({exc.strerror or exc})") from None
    if size > MAX_FILE_BYTES:
        raise UserError(f"{flag} {spec}: {size / 1e6:,.1f} MB; {expected} is a few prompts, at most {MAX_FILE_BYTES:,} bytes")
    raw = read_user_text(path, flag, expected)
    try:
        data = json.loads(raw) if path.suffix.lower() == ".json" else _toml(raw)
    except ValueError as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise UserError(f"{flag} {spec}: not valid {kind} ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{flag} {spec}: expected a table with name and [[behaviour]] entries")
    try:
        return Taxonomy.model_validate(data), source
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{flag} {spec}: {where}: {msg}" if where else f"{flag} {spec}: {msg}") from None


def _toml(text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


# ------------------------------------------------------------------------------------ reading a reply


@dataclass(frozen=True)
class Reading:
    """The count read from a reply, or why none was."""

    count: int | None
    reason: str = ""


def read_count(reply: str | None, rule: ReadRule) -> Reading:
    """The count in `reply` by `rule`; count None with the reason when there is none (an empty reply, no
    match, several different values under take = "only", a captured text that is not a whole number or
    is too large)."""
    if reply is None or not reply.strip():
        return Reading(None, "empty reply")
    found = [m.group(1) for m in re.finditer(rule.pattern, reply)]
    if not found:
        return Reading(None, f"no match of {rule.pattern} in the reply")
    values: list[int] = []
    for text in found:
        t = (text or "").strip()
        if not t.isdigit() or not t.isascii():
            return Reading(None, f"the matched text {t[:40]!r} is not a whole number")
        if len(t) > 10 or int(t) > MAX_COUNT:
            return Reading(None, f"the count {t[:20]} is too large to be a count")
        values.append(int(t))
    if rule.take == "only" and len(set(values)) > 1:
        return Reading(None, f"several different counts in the reply ({', '.join(map(str, values[:5]))})")
    return Reading(values[-1] if rule.take == "last" else values[0])
