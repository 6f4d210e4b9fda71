"""Mine slice references ("series 4, image 38", "Serie 3 Bild 12-15", "(4:103)") from English and German reports.

Each reference carries its character span, the series (or None when the report never names one), the image
numbers (lists and ranges expanded) and a snippet: the sentence or clause it belongs to with every reference
removed, so the snippet describes the finding without leaking the answer.

Decisions (documented because reports are ambiguous):
- A bare "image 99" inherits the series named most recently before it in the same report (None if none).
- "Im: 86/232", "Section No: 36/192" (a keyword followed by ":" / "No") is viewer-overlay style: image 86 of
  232, so only 86 is kept. Without such a label ("image 316/349") the slash lists two images.
- Ranges "Bild 12-15" expand to every image when the span is at most 200 images; otherwise both ends are kept.
- The shorthand "(4:103)" / "(4:292, 284)" counts only inside brackets, when no word around it marks a ratio,
  time, score or unit, and when context supports it: a finding word or size earlier in the sentence, or an
  explicit series/image reference elsewhere in the report. Ratio-like pairs (both <= 10) need both.
- "IMA: 42, IMA: 47" is two references; "images 206 and 286" is one reference with two images.
- US-style shorthand also counts outside brackets ("nodule, 3:23", "nodule on 4:573") after a finding word in the
  same sentence, unless it reads as a time (am/pm, "at 10:30" without a finding, clock positions "2:00", words such
  as "called", "discussed", "time" in the sentence), a ratio, dose or score (a blocking word before it), a vertebral
  or rib level ("T4:5" is never matched: the number must not follow a letter) or part of a longer number.
- "S7: 311", "Se 3: 44", "series 2: 170": a series keyword (or a capital "S") whose number is followed by a colon
  and the image number.
- A shorthand range "4:86 through 4:120" (or "-", "to", "bis") gives two references, one per end; the slices
  between them are not claimed.
- Only ASCII digits are numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from .ref_prefilter import candidate_starts
from .ref_snippets import cut_span
from .ref_snippets import snippet as make_snippet
from .sentences import sentence_spans

_NUM = r"[0-9]{1,4}(?![0-9])(?!\.[0-9])"
_JOIN = r"(?:\s*(?:,|/|&|\+)\s*(?:(?:and|und)\s+)?|\s+(?:and|und|or|oder)\s+|\s*(?:-|–|—|\bto\b|\bbis\b)\s*)"
_LIST = rf"{_NUM}(?:{_JOIN}{_NUM})*"
_SER = r"\b(?:series|serien|serie|serial|ser\.|se(?![a-zäöü])\.?)"
# "im" is a German preposition ("im Unterlappen"), so the bare abbreviation needs a colon or capital "Im"/"IM".
_IMG = (
    r"(?:\b(?:images?|imgs?|ima|sections?|slices?|bild(?:er)?|bild-?nr|schicht(?:en)?|schicht-?nr)\b\.?"
    r"|\b(?-i:Im|IM)(?![a-zA-Z])\.?|\bim(?=\s*:))"
)
_LABEL = r"(?:\s*(?:no\.?|nr\.?|number|#)(?=\s*:?\s*\d))?"
_KSEP = r"\s*(?P<colon{n}>[:#])?\s*"
_LEAD = r"(?:\s*[,;/]?\s*(?:(?:and|und)\s+)?(?:(?:on|in|at|auf)\s+)?)"
_BACK = r"(?:\s*[,(]?\s*(?:(?:in|of|on|from|at|der|in\s+der|aus|auf)\s+(?:the\s+)?)?)"
_SHRANGE = r"\s*(?:-|–|—|\bthrough\b|\bthru\b|\bto\b|\bbis\b)\s*"

_PATTERN = re.compile(
    rf"(?P<sfirst>{_SER}{_KSEP.format(n=1)}(?P<s1>{_NUM}){_LEAD}(?P<k1>{_IMG}{_LABEL}){_KSEP.format(n=2)}(?P<l1>{_LIST}))"
    rf"|(?P<ifirst>(?P<k2>{_IMG}{_LABEL}){_KSEP.format(n=3)}(?P<l2>{_LIST}){_BACK}{_SER}\s*:?\s*(?P<s2>{_NUM}))"
    rf"|(?P<sb>(?-i:\bS(?:e\.?)?)\s?:?\s?(?P<s3>{_NUM})\s*[/,;]?\s*(?-i:B(?:i\.?)?)\s?:?\s?(?P<l3>{_LIST}))"
    rf"|(?P<ionly>(?P<k4>{_IMG}{_LABEL}){_KSEP.format(n=4)}(?P<l4>{_LIST}))"
    rf"|(?P<scolon>(?:{_SER}|(?<![-–/])(?-i:\bS))\s?(?P<s7>{_NUM})\s?:\s?(?P<l7>{_LIST}))"
    rf"|(?P<sonly>{_SER}\s*:?\s*(?P<s5>{_NUM}))"
    rf"|(?P<short>(?<![\w:./,-])(?P<ob>\(\s*)?(?P<s6>{_NUM})\s?:\s?(?P<l6>{_NUM}(?:\s*,\s*{_NUM}(?!\s?:))*)"
    rf"(?:{_SHRANGE}(?P<s8>{_NUM})\s?:\s?(?P<l8>{_NUM}))?(?![\w:/]|\.[0-9])(?P<cb>\s*\))?)",
    re.IGNORECASE,
)
_ITEM = re.compile(rf"({_JOIN})?({_NUM})", re.IGNORECASE)
# Case matters: "image 124 ML" (a reconstruction label) is a reference, "124 ml" a volume.
_UNIT_AFTER = re.compile(
    r"\s*(?:mm|cm|ml|mL|m\b|HU\b|hu\b|%|x\b|X\b|×|\*|°|\.\d|-?(?:st|nd|rd|th)\b"
    r"|(?i:sec\b|s\b|min\b|h\b|hrs?\b|hours?\b|uhr\b|jahre?\b|years?\b|kg\b|mg\b|mgy\b|msv\b|o'clock))"
)
_WORD_AFTER = re.compile(r"\s*([a-zäöüß]+)")
# Words that may follow the last item of an image list; any other lower-case word ("1-2 nodules") means the
# number belongs to the following phrase, not to the list.
_LIST_FOLLOWERS = frozenset(
    """and or in on of at is are was were with from to see also respectively which where that show shows showed
    demonstrate demonstrates has have had there the a an as for by und oder im in der des auf von mit ist sind
    zeigt zeigen bzw sowie jeweils""".split()
)
_SHORT_BLOCK = re.compile(
    r"\b(?:ratio|verhältnis|quotient|rate|score|grade|grad|stadium|stage|time|zeit|o'clock|uhr|dilution"
    r"|verdünnung|scale|rads|mmhg|bpm|thickness|collimation|pitch|kernel)\W{0,12}$",
    re.IGNORECASE,
)
_SHORT_AFTER_BLOCK = re.compile(r"\s*(?:uhr|h\b|hrs?\b|am\b|pm\b|a\.m\.|p\.m\.|min\b|%)", re.IGNORECASE)
# Shorthand outside brackets ("nodule, 3:23") needs more care than "(3:23)": any of these words earlier in the
# sentence makes the pair a ratio, dose, score or setting, not a slice.
_BARE_BLOCK = re.compile(
    r"\b(?:ratio|verhältnis|quotient|rate|score|grade|grad|stage|stadium|dilution|verdünn\w*|mix\w*|mischung\w*"
    r"|dose|dosis|pitch|scale|rads|category|kategorie|protocol|protokoll|thickness|collimation|kernel|bpm|mmhg)\b",
    re.IGNORECASE,
)
# A time-like pair ("3:23") outside brackets is refused when the sentence talks about time or clock positions.
_TIME_WORDS = re.compile(
    r"\b(?:a\.?m\.?|p\.?m\.?|hours?|hrs?|o'?clock|uhr|um|time|zeit|clock|position|axis|nipple|breast|mamma"
    r"|called|discussed|communicated|notified|paged|phone|telephone|telefon\w*|conveyed|read\s+back|dr|doctor"
    r"|started|ended|completed|performed|acquired|injected|injection|delay|duration|dated?|scan(?:ned)?|exam)\b",
    re.IGNORECASE,
)
_AT_BEFORE = re.compile(r"\b(?:at|um|gegen)\s+(?:the\s+)?\(?\s*$", re.IGNORECASE)
_SIZE = re.compile(r"[0-9]\s*(?:mm|cm)\b", re.IGNORECASE)
_SPINE = re.compile(r"vertebr|\blevels?\b|\bdis[ck]|foram|sacr|lumbar|spine|wirbel|\b[blh]wk\b", re.IGNORECASE)
_CUE = re.compile(
    r"nodul|lesion|mass|cyst|focus|foci|opacit|consolidat|infiltrat|tumou?r|metasta|lymph|node|granulom|bulla"
    r"|effusion|atelecta|emphysem|plaque|calcif|sclero|sklero|thicken|bronchiect|pneumon|fibro|sequel|hernia|catheter"
    r"|herd|knoten|läsion|raumforderung|zyste|verdichtung|befund|erguss|ergüsse|atelekta|verkalk|verdick|lobe|lappen"
    r"|cardiomegal|kardiomegal|enlarg|vergrößer|pericard|perikard|aort|arteri|coronar|koronar|hiatus|hiatal|hernie"
    r"|mosaic|mosaik|septal|septen|glass|milchglas|\bport\b|pacemaker|schrittmacher|stent|tube|sonde|clip|device"
    r"|hypoden|hyperden|hypoatten|hyperatten|reticul|honeycomb|tree-in-bud|mucus|mucoid|plug|impaction|fractur"
    r"|fraktur|deformit|osteophyt|spicul|thyroid|schilddrüse|adrenal|hepatic|liver|renal|kidney"
    r"|\d\s*(?:mm|cm)\b",
    re.IGNORECASE,
)
_EXPLICIT = re.compile(rf"{_SER}\s*:?\s*\d|{_IMG}{_LABEL}\s*:?\s*\d", re.IGNORECASE)
_RANGE_LEAD = re.compile(r"\b(?:from|von|between|zwischen)\s+$", re.IGNORECASE)
_MAX_RANGE = 200
_RANGE = frozenset(("-", "–", "—", "to", "bis"))


@dataclass(frozen=True)
class SliceReference:
    """One slice reference: `series` (None when unknown), `images`, its [start, end) span and the clean snippet."""

    series: int | None
    images: tuple[int, ...]
    start: int
    end: int
    text: str
    snippet: str
    kind: str  # "series+image", "image", "shorthand"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["images"] = list(self.images)
        return d


def _parse_list(text: str, start: int, end: int, overlay: bool) -> tuple[list[int], int]:
    """Parse text[start:end] ('12-15', '206 and 286', '86/232') -> (images, end of the last number kept)."""
    items: list[tuple[str | None, int, int]] = []  # (joiner, value, end offset in text)
    for m in _ITEM.finditer(text, start, end):
        if m.start() != (items[-1][2] if items else start):
            break
        items.append(((m.group(1) or "").strip().lower() or None, int(m.group(2)), m.end()))
    # Trim trailing items that belong to what follows ("image 449, 17 mm", "image 108 and 1-2 nodules").
    while len(items) > 1:
        rest = text[items[-1][2] :]
        if _UNIT_AFTER.match(rest):
            items.pop()
            continue
        w = _WORD_AFTER.match(rest)
        if w and w.group(1) not in _LIST_FOLLOWERS:
            joiner = items.pop()[0]
            if joiner in _RANGE and len(items) > 1:
                items.pop()  # "1-2 nodules": the range start goes with its end
            continue
        break
    if len(items) == 2 and items[1][0] == "/" and overlay:
        return [items[0][1]], items[1][2]  # "Im: 86/232" = image 86 of 232
    images: list[int] = []
    for joiner, value, _ in items:
        if joiner in _RANGE and images and 0 < value - images[-1] <= _MAX_RANGE:
            images.extend(range(images[-1] + 1, value + 1))
        else:
            images.append(value)
    return images, items[-1][2]


def _unit_follows_first(text: str, m: re.Match, key: str) -> bool:
    """True when the first number of the list is a measurement ("sections 3 mm", "image 5 x 4")."""
    first = re.match(r"\d+", m.group(key))
    return bool(_UNIT_AFTER.match(text, m.start(key) + first.end()))


def _overlay(m: re.Match, colon: str, key: str) -> bool:
    return bool(m.group(colon)) or bool(re.search(r"(?:no|nr|number|#)\.?$", m.group(key), re.IGNORECASE))


def _shorthand_ok(text: str, m: re.Match, has_explicit: bool, sent: tuple[int, int]) -> bool:
    sa, sb = sent
    a, rest = int(m.group("s6")), [int(x) for x in re.findall(r"[0-9]+", m.group("l6"))]
    before = text[max(0, m.start() - 40) : m.start()]
    end = m.end("l8") if m.group("s8") else m.end("l6")
    if _SHORT_BLOCK.search(before) or _SHORT_AFTER_BLOCK.match(text, end):
        return False
    first = m.group("l6").split(",")[0].strip()
    timelike = a <= 23 and len(first) == 2 and rest[0] <= 59 and len(rest) == 1
    ratiolike = a <= 10 and all(x <= 10 for x in rest)
    if timelike and (m.group("s6").startswith("0") or _AT_BEFORE.search(text, max(sa, m.start() - 12), m.start())):
        return False  # "09:15", "at 10:30", "um (14:20)"
    cue = bool(_CUE.search(text, sa, m.start()))
    if not (m.group("ob") or m.group("cb")):  # outside brackets: "nodule, 3:23", "on 4:573", "4:86 through 4:120"
        if not cue or a == 0 or first.startswith("0") or _UNIT_AFTER.match(text, end):
            return False
        if _BARE_BLOCK.search(text, sa, m.start()):
            return False
        if timelike and _TIME_WORDS.search(text, sa, sb):
            return False
        if ratiolike:
            return has_explicit or bool(_SIZE.search(text, sa, m.start()))
        return True
    if ratiolike:  # "(2:1)": a low image number after a measured finding, or in a report with explicit references
        return cue and (has_explicit or bool(_SIZE.search(text, sa, m.start())))
    if timelike:
        return cue  # a bracketed "(2:43)" right after a finding; times are caught by the words around them
    return has_explicit or cue


class _Hit:
    __slots__ = ("series", "images", "start", "end", "kind", "cut", "joined")

    def __init__(self, series, images, start, end, kind, cut=None, joined=False):
        self.series, self.images, self.start, self.end, self.kind = series, images, start, end, kind
        self.cut = cut or (start, end)
        self.joined = joined  # the far end of a shorthand range: shares the snippet of the near end

    def text(self, text: str) -> str:
        return text[self.start : self.end]


def _candidates(text: str) -> Iterable[re.Match]:
    """Matches of the full pattern, tried only where the prefilter says one may start (see `ref_prefilter`): the
    full pattern (about 0.3 us per character scanned) runs only at those positions, in order, skipping any inside a
    match."""
    pos = 0
    for h in candidate_starts(text):
        if h < pos:
            continue
        m = _PATTERN.match(text, h)
        if m is not None and m.end() > m.start():
            pos = m.end()
            yield m


def _sentence_at(text: str, pos: int, margin: int = 300) -> tuple[int, int]:
    """The sentence span holding character `pos`, found by splitting only a window around it."""
    n = len(text)
    while True:
        a, b = max(0, pos - margin), min(n, pos + margin)
        for sa, sb in sentence_spans(text, a, b):
            if sa <= pos < sb or pos < sa:
                # A sentence cut by the window edge is not trustworthy: widen and retry.
                if (sa > a + 1 or a == 0) and (sb < b - 1 or b == n):
                    return sa, sb
                break
        else:
            if a == 0 and b == n:
                return pos, pos
        if a == 0 and b == n:
            return sa, sb
        margin *= 2


def _scan(text: str) -> tuple[list[_Hit], list[_Hit]]:
    """All references and the bare series mentions (kept only to be cut out of snippets)."""
    refs: list[_Hit] = []
    mentions: list[_Hit] = []
    last_series: int | None = None
    has_explicit: bool | None = None
    for m in _candidates(text):
        g = m.group
        if g("sfirst"):
            if _unit_follows_first(text, m, "l1"):
                continue
            images, used = _parse_list(text, m.start("l1"), m.end("l1"), _overlay(m, "colon2", "k1"))
            last_series = int(g("s1"))
            refs.append(_Hit(last_series, images, m.start(), used, "series+image"))
        elif g("ifirst") or g("sb"):
            key = "l2" if g("ifirst") else "l3"
            if _unit_follows_first(text, m, key):
                continue
            overlay = g("ifirst") is not None and _overlay(m, "colon3", "k2")
            images, used = _parse_list(text, m.start(key), m.end(key), overlay)
            if used != m.end(key):
                # The list was trimmed, so the series phrase does not belong to it: an image-only reference.
                refs.append(_Hit(last_series, images, m.start(), used, "image"))
                continue
            last_series = int(g("s2") or g("s3"))
            refs.append(_Hit(last_series, images, m.start(), m.end(), "series+image"))
        elif g("ionly"):
            if _unit_follows_first(text, m, "l4"):
                continue
            if g("k4").rstrip(".") in ("Im", "IM") and not g("colon4") and text.startswith(". ", m.end("l4")):
                continue  # German "Im 2. Segment": an ordinal after the preposition, not "Im(age) 2"
            images, used = _parse_list(text, m.start("l4"), m.end("l4"), _overlay(m, "colon4", "k4"))
            refs.append(_Hit(last_series, images, m.start(), used, "image"))
        elif g("scolon"):
            bare_s = text[m.start()] == "S" and not text[m.start() + 1 : m.start() + 2].isalpha()
            if _unit_follows_first(text, m, "l7") or (bare_s and not _bare_s_ok(text, m)):
                if not bare_s and not _UNIT_AFTER.match(text, m.end("s7")):  # "Series 2: 5 mm ...": a mention
                    last_series = int(g("s7"))
                    mentions.append(_Hit(last_series, [], m.start(), m.end("s7"), "series"))
                continue
            images, used = _parse_list(text, m.start("l7"), m.end("l7"), True)
            last_series = int(g("s7"))
            refs.append(_Hit(last_series, images, m.start(), used, "series+image"))
        elif g("sonly"):
            if not _UNIT_AFTER.match(text, m.end()):
                last_series = int(g("s5"))
                mentions.append(_Hit(last_series, [], m.start(), m.end(), "series"))
        elif g("short"):
            if has_explicit is None:
                has_explicit = bool(_EXPLICIT.search(text))
            if not _shorthand_ok(text, m, has_explicit, _sentence_at(text, m.start())):
                continue
            last_series = int(g("s6"))
            images = [int(x) for x in re.findall(r"[0-9]+", g("l6"))]
            # The span is the numbers only ("4:103"); the brackets go with the snippet cut.
            if not g("s8"):
                refs.append(_Hit(last_series, images, m.start("s6"), m.end("l6"), "shorthand"))
                continue
            # A range "4:86 through 4:120": both ends are references, the slices between are not claimed. The
            # snippet cut covers the whole range and a "from"/"von" before it.
            lead = _RANGE_LEAD.search(text, max(0, m.start("s6") - 12), m.start("s6"))
            cut = (lead.start() if lead else m.start("s6"), m.end("l8"))
            refs.append(_Hit(last_series, images, m.start("s6"), m.end("l6"), "shorthand", cut))
            last_series = int(g("s8"))
            refs.append(_Hit(last_series, [int(g("l8"))], m.start("s8"), m.end("l8"), "shorthand", cut, True))
    return refs, mentions


def _bare_s_ok(text: str, m: re.Match) -> bool:
    """"S7: 311" with a bare capital S: inside brackets or after a finding, and not a spine level ("S1: ...")."""
    sa, sb = _sentence_at(text, m.start())
    if _SPINE.search(text, sa, sb):
        return False
    return text[max(sa, m.start() - 2) : m.start()].strip().endswith("(") or bool(_CUE.search(text, sa, m.start()))


def mine_references(text: str) -> list[SliceReference]:
    """Every slice reference in `text`, in order of appearance (see module doc for the rules)."""
    if not text:
        return []
    refs, mentions = _scan(text)
    if not refs:
        return []
    # Only the sentences holding references are split out: splitting whole reports would dominate the run time.
    sents: list[tuple[int, int]] = []
    for h in refs:
        if not sents or h.start >= sents[-1][1]:
            sents.append(_sentence_at(text, h.start))
    out: list[SliceReference] = []
    for sa, sb in sents:
        inside = [h for h in refs if sa <= h.start < sb]
        if not inside:
            continue
        allhits = inside + [h for h in mentions if sa <= h.start < sb]
        cuts = [cut_span(text, h.cut, sa) for h in allhits]
        for i, h in enumerate(inside):
            if h.joined and i > 0:  # far end of a shorthand range: the near end's snippet
                snippet = out[-1].snippet
                out.append(SliceReference(h.series, tuple(h.images), h.start, h.end, h.text(text), snippet, h.kind))
                continue
            if sum(not x.joined for x in inside) == 1:  # one reference (or one range) in the sentence
                lo, hi = sa, sb
            else:
                # Several references in one sentence: the clause running up to this one usually names the finding
                # it points at ("nodules in the upper lobe, serial 2 image 60, ..."); if that clause is too short,
                # the finding follows the reference instead ("(in image 18 in series 2), 7 mm in size ...").
                # References next to each other ("IMA: 42, IMA: 47") share the previous one's snippet.
                lo = sa if i == 0 else inside[i - 1].end
                hi = h.end
                if len(make_snippet(text, lo, hi, cuts).split()) < 3:
                    if i > 0 and not re.search(r"[^\W\d_]", text[inside[i - 1].end : h.start].replace("and", "")):
                        snippet = out[-1].snippet
                        out.append(
                            SliceReference(
                                h.series, tuple(h.images), h.start, h.end, text[h.start : h.end], snippet, h.kind
                            )
                        )
                        continue
                    lo, hi = h.start, inside[i + 1].start if i + 1 < len(inside) else sb
            snippet = make_snippet(text, lo, hi, cuts)
            out.append(
                SliceReference(h.series, tuple(h.images), h.start, h.end, text[h.start : h.end], snippet, h.kind)
            )
    return out
