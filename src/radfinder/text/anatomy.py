"""Per-anatomy report text (fVLM): assign each report sentence to an anatomy, flag it normal or abnormal, and build
one text per anatomy with fVLM's convention for an anatomy without an abnormal sentence.

Two backends give the same `SentenceAssignment`s: `RuleAssigner` (keyword rules in English and German from
`resources/anatomy/text_rules.yaml`, or a user YAML of the same layout) and `LLMAssigner` (one question per
sentence to any OpenAI-compatible endpoint through `radfinder.text.llm`, answers cached on disk).

The per-anatomy text follows fVLM's released data convention: text = conclusion + description, where the
conclusion holds the anatomy's sentences from the impression and the description those from the findings; an
anatomy with no abnormal sentence gets "{Anatomy} shows no significant abnormalities." in front of its (normal)
description sentences, and is flagged normal. `strip_template` removes that prefix again (fVLM encodes the text
without it).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..config import read_resource_or_file
from ..errors import ConfigError
from .clauses import AFFIRMED, NEGATED, RESOLVED, UNCERTAIN, clause_spans, mention_status
from .labeler import clause_mentions
from .llm import AnswerCache, LLMClient, LLMConfig
from .sentences import sentence_spans

_LIST_MARKER = re.compile(r"^\s*\d{1,2}[.)]\s+")


@dataclass(frozen=True)
class SentenceAssignment:
    """One sentence of a report section: where it is, the anatomy it describes (None: none of them), and whether
    it states an abnormality."""

    text: str
    start: int
    end: int
    section: str  # "findings" or "impression"
    anatomy: str | None  # the main anatomy (most keyword hits, or the LLM's answer)
    abnormal: bool
    anatomies: tuple[str, ...] = ()  # every anatomy the sentence speaks of (the main one first)
    # the anatomies an abnormal clause of it speaks of (rule backend); None: use `abnormal` for all of `anatomies`
    abnormal_anatomies: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AnatomyText:
    anatomy: str
    text: str
    abnormal: bool
    sentences: tuple[str, ...] = ()


@dataclass
class AnatomyTextRules:
    """Compiled rules: per anatomy and language keyword patterns, exclusions, normal-statement patterns."""

    keywords: dict[str, dict[str, list[re.Pattern]]]
    exclude: dict[str, list[re.Pattern]]
    normal: dict[str, list[re.Pattern]]
    names: dict[str, dict[str, str]]
    templates: dict[str, str]
    source: str = "built-in"
    abnormal_cues: dict[str, list[re.Pattern]] = field(default_factory=lambda: {"en": [], "de": []})

    @property
    def anatomies(self) -> list[str]:
        return list(self.keywords)

    def template(self, anatomy: str, lang: str = "en") -> str:
        name = self.names.get(anatomy, {}).get(lang) or anatomy.capitalize()
        return self.templates.get(lang, self.templates["en"]).format(anatomy=name)


def _compile(patterns: Any, where: str) -> list[re.Pattern]:
    if patterns is None:
        return []
    if not isinstance(patterns, list):
        raise ConfigError(f"{where}: expected a list of regular expressions")
    out = []
    for p in patterns:
        try:
            out.append(re.compile(str(p), re.IGNORECASE))
        except re.error as exc:
            raise ConfigError(f"{where}: invalid pattern {p!r}: {exc}") from exc
    return out


def load_text_rules(path: str | Path | None = None) -> AnatomyTextRules:
    """The built-in EN/DE rules (None) or a user YAML with the same layout."""
    import yaml

    raw, where = read_resource_or_file(path, "resources/anatomy/text_rules.yaml", "anatomy text rules")
    data = yaml.safe_load(raw)
    if not isinstance(data, dict) or not isinstance(data.get("anatomies"), dict) or not data["anatomies"]:
        raise ConfigError(f"{where}: needs a non-empty 'anatomies' mapping")
    keywords, names = {}, {}
    for a, spec in data["anatomies"].items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: anatomy {a!r} needs a mapping with 'en'/'de' keyword lists")
        keywords[str(a)] = {lang: _compile(spec.get(lang), f"{where}: {a}.{lang}") for lang in ("en", "de")}
        names[str(a)] = dict(spec.get("names") or {})
    templates = {"en": "{anatomy} shows no significant abnormalities.", **(data.get("templates") or {})}
    exclude = {lg: _compile((data.get("exclude") or {}).get(lg), f"{where}: exclude.{lg}") for lg in ("en", "de")}
    normal = {lg: _compile((data.get("normal") or {}).get(lg), f"{where}: normal.{lg}") for lg in ("en", "de")}
    cues = data.get("abnormal_cues") or {}
    abnormal_cues = {lg: _compile(cues.get(lg), f"{where}: abnormal_cues.{lg}") for lg in ("en", "de")}
    return AnatomyTextRules(keywords, exclude, normal, names, templates, where, abnormal_cues)


class SentenceAssigner(Protocol):
    anatomies: list[str]

    def classify(self, sentences: list[str], lang: str) -> list[tuple[str | None, bool]]: ...


class RuleAssigner:
    """Keyword rules: exclusions first, then the anatomy with most keyword hits (ties: the one named first)."""

    def __init__(self, rules: AnatomyTextRules | None = None):
        self.rules = rules or load_text_rules()
        self.anatomies = self.rules.anatomies

    def anatomies_of(self, sentence: str, lang: str = "en") -> tuple[tuple[str, ...], bool]:
        """(every anatomy the sentence names, main one first; abnormal flag)."""
        names, abnormal, _ = self.sentence_flags(sentence, lang)
        return names, abnormal

    def sentence_flags(self, sentence: str, lang: str = "en") -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
        """(every anatomy of the sentence, main one first; whether any clause is abnormal; the anatomies an
        abnormal clause speaks of).

        Flags are per clause (`clauses.clause_spans`): a clause is normal when a `normal` pattern matches it or
        the shared negation (`clauses.mention_status`) negates every anatomy keyword in it. A normal clause no
        longer hides an abnormal one next to it ("Heart size is normal, pericardial effusion of 8 mm is observed.").
        An abnormal clause marks the anatomies it names, or, naming none but holding an `abnormal_cues` word, those
        of the clause before it (else the sentence's main anatomy). A CT-RATE finding the labeler affirms or hedges
        in a clause marks its anatomy (`FINDING_ANATOMY`) abnormal even where the keywords miss it ("plaques in the
        main vascular structures") or the sentence is excluded (a stent next to coronary calcification); the same
        negation decides it.
        """
        lang = lang if lang in ("en", "de") else "en"
        s = _LIST_MARKER.sub("", sentence).strip()
        excluded = any(p.search(s) for p in self.rules.exclude[lang])
        hits: dict[str, list[int]] = {}
        abnormal_any = False
        flagged: list[str] = []
        found: list[str] = []
        prev: tuple[str, ...] = ()
        pending = False  # an abnormal clause without anatomy before any clause that names one
        for a, b in clause_spans(s):
            c = s[a:b]
            mine: dict[str, list[tuple[int, int]]] = {}
            if not excluded:
                for name, by_lang in self.rules.keywords.items():
                    spans = [(m.start(), m.end()) for p in by_lang[lang] for m in p.finditer(c)]
                    if spans:
                        mine[name] = spans
                        hits.setdefault(name, []).extend(a + x for x, _ in spans)
            negated = bool(mine) and all(
                mention_status(c, x, y) in (NEGATED, RESOLVED) for spans in mine.values() for x, y in spans
            )
            normal = negated or any(p.search(c) for p in self.rules.normal[lang])
            from_labels = [
                FINDING_ANATOMY.get(f)
                for f, status in clause_mentions(c)
                if status in (AFFIRMED, UNCERTAIN) and FINDING_ANATOMY.get(f) in self.rules.keywords
            ]
            found += [x for x in from_labels if x and x not in found]
            names = tuple(mine) or prev
            if not normal:
                abnormal_any = True
                if mine:
                    flagged += names
                elif any(p.search(c) for p in self.rules.abnormal_cues[lang]):
                    if prev:
                        flagged += prev
                    elif not excluded:
                        pending = True
            flagged += [x for x in from_labels if x]
            prev = names
        keys = sorted((-len(v), min(v), a) for a, v in hits.items())
        ordered = tuple(k[2] for k in keys)
        ordered += tuple(x for x in found if x not in ordered)
        if pending and ordered:
            flagged.append(ordered[0])
        return ordered, abnormal_any, tuple(x for x in ordered if x in flagged)

    def classify_one(self, sentence: str, lang: str = "en") -> tuple[str | None, bool]:
        names, abnormal = self.anatomies_of(sentence, lang)
        return (names[0] if names else None), abnormal

    def classify(self, sentences: list[str], lang: str = "en") -> list[tuple[str | None, bool]]:
        return [self.classify_one(s, lang) for s in sentences]


LLM_PROMPT = (
    "Here is one sentence of a chest CT report:\n{sentence}\n\n"
    "Which anatomy does it describe? Choose exactly one of: {choices}, none. Does it state an abnormal finding "
    '(not a normal or negated statement)? Answer only with JSON: {{"anatomy": "...", "abnormal": true or false}}'
)
_JSON = re.compile(r"\{[^{}]*\}", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>|<think>.*$", re.DOTALL | re.IGNORECASE)


def parse_llm_answer(text: str | None, anatomies: list[str]) -> tuple[str | None, bool] | None:
    """(anatomy or None, abnormal) from a JSON answer; None when the answer is not valid."""
    if not text:
        return None
    for m in _JSON.finditer(_THINK.sub(" ", text)):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        a = str(obj.get("anatomy", "")).strip().lower()
        ab = obj.get("abnormal")
        if isinstance(ab, str):
            ab = {"true": True, "yes": True, "false": False, "no": False}.get(ab.strip().lower())
        if not isinstance(ab, bool):
            continue
        if a in ("none", "", "null"):
            return None, ab
        if a in anatomies:
            return a, ab
    return None


class LLMAssigner:
    """One chat-completion question per sentence; answers cached by (model, sentence, anatomy list). An answer that
    stays invalid after `config.invalid_retries` re-asks falls back to the rule assigner's answer."""

    def __init__(self, config: LLMConfig, anatomies: list[str] | None = None, fallback: RuleAssigner | None = None):
        self.config = config
        self.fallback = fallback or RuleAssigner()
        self.anatomies = list(anatomies or self.fallback.anatomies)
        self.client = LLMClient(config)
        self.cache = AnswerCache(config.cache_dir) if config.cache_dir else None
        self.invalid = 0

    def _ask(self, sentence: str) -> tuple[str | None, bool] | None:
        prompt = LLM_PROMPT.format(sentence=sentence, choices=", ".join(self.anatomies))
        key = AnswerCache.key(self.config.model, sentence, "anatomy:" + ",".join(self.anatomies))
        if self.cache is not None:
            got = parse_llm_answer(self.cache.get(key), self.anatomies)
            if got is not None:
                return got
        for _ in range(self.config.invalid_retries + 1):
            answer = self.client.ask(prompt)
            got = parse_llm_answer(answer, self.anatomies)
            if got is not None:
                if self.cache is not None:
                    self.cache.put(key, answer)
                return got
        return None

    def classify(self, sentences: list[str], lang: str = "en") -> list[tuple[str | None, bool]]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            answers = list(pool.map(self._ask, sentences))
        out = []
        for s, a in zip(sentences, answers, strict=True):
            if a is None:
                self.invalid += 1
                a = self.fallback.classify_one(s, lang)
            out.append(a)
        return out


def split_section(text: str, section: str) -> list[tuple[str, int, int]]:
    """(sentence without a leading list marker, start, end) for each sentence of one report section."""
    out = []
    for a, b in sentence_spans(text or ""):
        s = text[a:b]
        m = _LIST_MARKER.match(s)
        if m:
            a += m.end()
            s = text[a:b]
        if s.strip():
            out.append((s, a, b))
    return out


def assign_sentences(
    findings: str, impression: str = "", lang: str = "en", assigner: SentenceAssigner | None = None
) -> list[SentenceAssignment]:
    """Every sentence of the findings, then of the impression, with its anatomy and abnormal flag."""
    assigner = assigner or RuleAssigner()
    parts = [(s, a, b, "findings") for s, a, b in split_section(findings, "findings")]
    parts += [(s, a, b, "impression") for s, a, b in split_section(impression, "impression")]
    texts = [p[0] for p in parts]
    if isinstance(assigner, RuleAssigner):
        flags = [assigner.sentence_flags(t, lang) for t in texts]
        return [
            SentenceAssignment(s, a, b, sec, names[0] if names else None, ab, names, abn)
            for (s, a, b, sec), (names, ab, abn) in zip(parts, flags, strict=True)
        ]
    labels = assigner.classify(texts, lang)
    return [
        SentenceAssignment(s, a, b, sec, anat, bool(ab), (anat,) if anat else ())
        for (s, a, b, sec), (anat, ab) in zip(parts, labels, strict=True)
    ]


def anatomy_texts(
    findings: str,
    impression: str = "",
    lang: str = "en",
    assigner: SentenceAssigner | None = None,
    rules: AnatomyTextRules | None = None,
    anatomies: list[str] | None = None,
) -> dict[str, AnatomyText]:
    """One text per anatomy (fVLM convention, see the module doc), in the order of `anatomies`."""
    assigner = assigner or RuleAssigner(rules)
    rules = rules or getattr(assigner, "rules", None) or load_text_rules()
    names = list(anatomies or assigner.anatomies)
    sents = assign_sentences(findings, impression, lang, assigner)
    out: dict[str, AnatomyText] = {}
    for a in names:
        mine = [s for s in sents if a in s.anatomies]
        conclusion = [s.text for s in mine if s.section == "impression"]
        description = [s.text for s in mine if s.section == "findings"]
        abnormal = any(s.abnormal if s.abnormal_anatomies is None else a in s.abnormal_anatomies for s in mine)
        if abnormal:
            body = conclusion + description
        else:
            body = [rules.template(a, lang)] + description
        out[a] = AnatomyText(a, " ".join(body), abnormal, tuple(s.text for s in mine))
    return out


def strip_template(text: str, anatomy: str, lang: str = "en", rules: AnatomyTextRules | None = None) -> str:
    """The text without the no-abnormality template prefix (what fVLM encodes)."""
    t = (rules or load_text_rules()).template(anatomy, lang)
    return text[len(t) :].lstrip() if text.startswith(t) else text


def is_template_normal(text: str, anatomy: str, lang: str = "en", rules: AnatomyTextRules | None = None) -> bool:
    """fVLM's normal flag: the text starts with the no-abnormality template."""
    return text.startswith((rules or load_text_rules()).template(anatomy, lang))


def text_id(text: str) -> int:
    """A content-derived 63-bit id: equal for identical texts in every process and run (not Python's `hash`)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


# fVLM's released zero-shot mapping of the 18 CT-RATE findings to its four anatomies (method notes 2.2: lung
# "Emphysema."/"Atelectatic.", heart "Cardiomegaly.", esophagus "Hiatal hernia.", aorta "Arterial wall
# calcification."; 16 of 18 mapped). Medical material and Lymphadenopathy sit in none of the four masks.
FINDING_ANATOMY: dict[str, str | None] = {
    "Medical material": None,
    "Arterial wall calcification": "aorta",
    "Cardiomegaly": "heart",
    "Pericardial effusion": "heart",
    "Coronary artery wall calcification": "heart",
    "Hiatal hernia": "esophagus",
    "Lymphadenopathy": None,
    "Emphysema": "lung",
    "Atelectasis": "lung",
    "Lung nodule": "lung",
    "Lung opacity": "lung",
    "Pulmonary fibrotic sequela": "lung",
    "Pleural effusion": "lung",
    "Mosaic attenuation pattern": "lung",
    "Peribronchial thickening": "lung",
    "Consolidation": "lung",
    "Bronchiectasis": "lung",
    "Interlobular septal thickening": "lung",
}
