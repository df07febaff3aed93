"""Poll kinds: what each kind's poll needs when it is created, and what a vote on it looks like.

A vote's *choice* is one of four types, made once from the request body here:

- `Options` (`single`, `multiple`, `rating`, `quiz`): the sorted chosen option ids. A rating's
  options are the scale's values "1".."N", so its tallies and charts are the same as a choice's.
- `Answer` (`text`, a word cloud): the answer.
- `Question` (`qa`): asks a question (its id is the vote's event id).
- `Upvote` (`qa`): upvotes a question, by its id.

The same vote always gives the same bytes on the queue (idempotent puts, and a retry compared
with the first try). The database keeps a choice as canonical JSON (`to_json`): the list of
option ids, `{"t": answer}`, `{"q": question}` or `{"u": question_id}`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import msgspec

from opus.errors import BadRequest, Unprocessable

KINDS = ("single", "multiple", "rating", "text", "qa", "quiz")
OPTION_KINDS = frozenset({"single", "multiple", "rating", "quiz"})
MIN_OPTIONS, MAX_OPTIONS = 2, 30
MAX_LABEL = 200
MAX_ANSWER = 80  # a word-cloud answer: a few words
MAX_ASK = 280  # a Q&A question
MAX_BLOCKED = 200
SCALES = (5, 10)
DEFAULT_TIME_LIMIT_S = 20
TIME_LIMIT_RANGE = (5, 600)
# A quiz answer sent in the last moment still counts: phones, Wi-Fi and the queue take time.
QUIZ_GRACE_S = 1.0


def canonical(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


_encode_json = msgspec.json.Encoder().encode


class Options(msgspec.Struct, frozen=True, tag="o", array_like=True):
    ids: tuple[str, ...]  # sorted


class Answer(msgspec.Struct, frozen=True, tag="t", array_like=True):
    text: str


class Question(msgspec.Struct, frozen=True, tag="q", array_like=True):
    text: str


class Upvote(msgspec.Struct, frozen=True, tag="u", array_like=True):
    question_id: str


Choice = Options | Answer | Question | Upvote


def to_json(choice: Choice) -> str:
    """The canonical JSON the database keeps (and the queue kept before MessagePack)."""
    match choice:
        case Options(ids):
            # Option ids are the server's uuids (ASCII): msgspec writes the same text as
            # `canonical`, in a fraction of the time (a vote's hot path).
            return _encode_json(ids).decode()
        case Answer(text):
            return canonical({"t": text})
        case Question(text):
            return canonical({"q": text})
        case Upvote(question_id):
            return canonical({"u": question_id})
    raise TypeError(choice)


def from_json(value: str | list[Any] | dict[str, Any]) -> Choice:
    """A choice from its canonical JSON (text, or already parsed)."""
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, list):
        return Options(tuple(sorted(str(v) for v in value)))
    if isinstance(value, dict) and len(value) == 1:
        ((key, item),) = value.items()
        if key == "t":
            return Answer(str(item))
        if key == "q":
            return Question(str(item))
        if key == "u":
            return Upvote(str(item))
    raise ValueError(f"not a vote choice: {str(value)[:100]}")


@dataclass(frozen=True, slots=True)
class Spec:
    """The kind-specific settings of a poll, checked."""

    labels: list[str]
    correct: list[int]
    scale: int | None
    blocked_words: list[str]
    moderated: bool
    time_limit_s: int | None


def _labels(raw: list[str] | None) -> list[str]:
    if raw is None:
        raise BadRequest("'options' must be a list of labels.", code="invalid_field")
    labels = [label.strip() for label in raw]
    if not MIN_OPTIONS <= len(labels) <= MAX_OPTIONS:
        raise Unprocessable(
            f"A poll has {MIN_OPTIONS} to {MAX_OPTIONS} options.", code="option_count"
        )
    if any(not label or len(label) > MAX_LABEL for label in labels):
        raise Unprocessable(
            f"Every option needs a label of 1 to {MAX_LABEL} characters.", code="invalid_field"
        )
    if len(set(labels)) != len(labels):
        raise Unprocessable("Two options have the same label.", code="duplicate_option")
    return labels


def blocked_words(raw: list[str] | str) -> list[str]:
    if isinstance(raw, str):  # a host types them as one line: "foo, bar baz"
        raw = [w for w in re.split(r"[,\s]+", raw) if w]
    words = sorted({w.strip().lower() for w in raw if w.strip()})
    if len(words) > MAX_BLOCKED:
        raise Unprocessable(f"At most {MAX_BLOCKED} blocked words.", code="too_long")
    return words


def spec(
    kind: str,
    *,
    options: list[str] | None,
    correct: list[int] | None,
    scale: int,
    time_limit_s: int | None,
    blocked: list[str] | str,
    moderated: bool,
) -> Spec:
    """Check a poll's kind-specific fields (creation, or an edit of a draft); their types
    were checked where the body was decoded (bodies.py)."""
    labels: list[str] = []
    right: list[int] = []
    time_limit: int | None = None
    if kind in ("single", "multiple", "quiz"):
        labels = _labels(options)
    if kind == "rating":
        if scale not in SCALES:
            raise Unprocessable("'scale' must be 5 or 10.", code="invalid_scale")
        labels = [str(n) for n in range(1, scale + 1)]
    if kind == "quiz":
        if correct is None:
            raise BadRequest(
                "'correct' must be a list of option positions (0, 1, ...).", code="invalid_field"
            )
        right = sorted(set(correct))
        if not right or not all(0 <= i < len(labels) for i in right):
            raise Unprocessable(
                "A quiz needs at least one correct option among its options.",
                code="invalid_correct",
            )
        time_limit = time_limit_s
        if time_limit is not None:
            low, high = TIME_LIMIT_RANGE
            if not low <= time_limit <= high:
                raise Unprocessable(
                    f"'time_limit_s' is between {low} and {high} seconds.",
                    code="invalid_time_limit",
                )
    return Spec(
        labels=labels,
        correct=right,
        scale=scale if kind == "rating" else None,
        blocked_words=blocked_words(blocked) if kind == "text" else [],
        moderated=moderated if kind == "qa" else False,
        time_limit_s=time_limit,
    )


# -- votes ------------------------------------------------------------------------------


def _short_text(raw: str | None, limit: int) -> str:
    if raw is None:
        raise BadRequest("'text' must be a string.", code="invalid_field")
    text = " ".join(raw.split())
    if not text:
        raise Unprocessable("Write something first.", code="empty_text")
    if len(text) > limit:
        raise Unprocessable(f"Keep it under {limit} characters.", code="too_long")
    return text


def option_choice(
    kind: str,
    options: tuple[str, ...],
    allowed: frozenset[str],
    *,
    option_ids: list[str] | None,
    value: int | None = None,
) -> Options:
    """The choice of a vote on an option kind (`options`: the poll's, in order)."""
    if kind == "rating" and value is not None:
        if not 1 <= value <= len(options):
            raise Unprocessable(f"'value' is between 1 and {len(options)}.", code="invalid_value")
        return Options((options[value - 1],))
    if option_ids is None:
        raise BadRequest("'option_ids' must be a list of option ids.", code="invalid_field")
    chosen = sorted(set(option_ids))
    if not chosen:
        raise Unprocessable("Choose at least one option.", code="no_option")
    if kind != "multiple" and len(chosen) != 1:
        raise Unprocessable("This poll takes exactly one option.", code="too_many_options")
    if not allowed.issuperset(chosen):
        raise Unprocessable("An option is not one of this poll's.", code="invalid_option")
    return Options(tuple(chosen))


def text_choice(text: str | None) -> Answer:
    return Answer(_short_text(text, MAX_ANSWER))


def qa_choice(text: str | None, upvote: str | None) -> Question | Upvote:
    """A question (`text`) or an upvote (`upvote`: the question's id)."""
    if upvote is not None:
        if not upvote:
            raise BadRequest("'upvote' must be a question id.", code="invalid_field")
        return Upvote(upvote)
    return Question(_short_text(text, MAX_ASK))


_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")  # words, with "don't" and "e-mail"
# Emoji, with their skin tones, variation selectors and joined sequences ("👍🏽", "👩‍💻").
_PICTO = "\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff"
_EMOJI = re.compile(f"[{_PICTO}](?:[\u200d\ufe0f\U0001f3fb-\U0001f3ff]+[{_PICTO}]?)*")
PHRASE_WORDS = 3  # an answer of up to this many words is one entry of the cloud


def words(answer: str) -> list[str]:
    """A word-cloud answer's entries, lowercased, each counted once per answer: a short answer
    ("New York", "🎉", "ニューヨーク") is one phrase; a longer one counts each of its words
    and emoji."""
    tokens = [t for t in (_trim(t) for t in answer.lower().split()) if t]
    if len(tokens) <= PHRASE_WORDS:
        phrase = " ".join(tokens)
        return [phrase] if _WORD.search(phrase) or _EMOJI.search(phrase) else []
    text = " ".join(tokens)
    seen: list[str] = []
    for word in [*_WORD.findall(text), *_EMOJI.findall(text)]:
        if word not in seen:
            seen.append(word)
    return seen


def _trim(token: str) -> str:
    """A token without the punctuation around it ("york!", "«oui»", "「はい」")."""
    start, end = 0, len(token)
    while start < end and unicodedata.category(token[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(token[end - 1]).startswith("P"):
        end -= 1
    return token[start:end]


def hidden_by(entry: str, blocked: set[str]) -> bool:
    """Whether a cloud entry (a word or a short phrase) holds a blocked word, or is one."""
    return entry in blocked or any(word in blocked for word in entry.split(" "))


def quiz_points(correct: bool, elapsed_s: float, limit_s: int | None) -> int:
    """500 for a right answer, up to 500 more the faster it came; nothing for a wrong one."""
    if not correct:
        return 0
    if not limit_s:
        return 1000
    return 500 + round(500 * max(0.0, 1.0 - max(0.0, elapsed_s) / limit_s))
