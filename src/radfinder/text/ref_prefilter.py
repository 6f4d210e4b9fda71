"""Where slice references may start in a report: the fast prefilter of the reference miner (`references`).

Scanning the full pattern over every report is ~20x too slow, and most reports have no reference.
Every reference holds a digit run that is either preceded by a keyword ("series", "image", "(", "B", ...: see
`_BEHIND`) or followed by ":" and a digit (shorthand, "S7: 311"). Digit runs are found without a regex pass over
the text (6-20 ns per character in `re`): the text is encoded to one byte per character ("?" for anything
outside ASCII, so offsets are kept), every byte mapped to "0" (digit) or " " (other), and the runs located with
bytes.find. Only at the few runs that pass the checks is the full pattern tried. The prefilter may pass
text that is no reference (the full pattern decides), but must never miss one.
"""

from __future__ import annotations

import re

_DIGIT_MASK = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LABEL_TAIL = r"[\s.:#-]{0,6}(?:no\.?|nr\.?|number)?[\s.:#]{0,3}"
_BEHIND = re.compile(
    r"(?:seri[a-z]*[\s.:#-]{0,6}|ser?\.?[\s.:]{0,3}|(?:im(?:ages?|gs?|a)?\.?|sect[a-z]*|slic[a-z]*|bild[a-z]*"
    r"|schicht[a-z]*)" + _LABEL_TAIL + r"|\(\s*)$"
)
# `_BEHIND` spelled backwards, matched at the start of the reversed lower-cased text before a digit run: one
# anchored attempt instead of a search over 40 start positions (tests check that both agree).
_BEHIND_REV = re.compile(
    r"\s*\("
    r"|[\s.:#-]{0,6}[a-z]*ires"
    r"|[\s.:]{0,3}\.?r?es"
    r"|[\s.:#]{0,3}(?:\.?on|\.?rn|rebmun)?[\s.:#-]{0,6}(?:\.?(?:s?ega|s?g|a)?mi|[a-z]*(?:tces|cils|dlib|thcihcs))"
)
_BEHIND_CASED_REV = re.compile(r"\s?:?\s?(?:\.?i)?B")  # "S3/B45", "Se. 5, Bi. 33" (reversed, case kept)
_COLON_AFTER = re.compile(r"\s*:\s*[0-9]")
_WIN_BEFORE = 40


def _digit_runs(text: str) -> list[tuple[int, int]]:
    """(start, end) of every run of ASCII digits in `text`."""
    mask = text.encode("ascii", "replace").translate(_DIGIT_MASK)
    runs = []
    find = mask.find
    i = find(b"0")
    while i >= 0:
        j = find(b" ", i)
        if j < 0:
            runs.append((i, len(mask)))
            break
        runs.append((i, j))
        i = find(b"0", j)
    return runs


def candidate_starts(text: str) -> list[int]:
    """Sorted positions where an alternative of the miner's full pattern may start.

    Every alternative starts at a keyword right before a digit run ("series 4"), at the bracket or the digit of a
    shorthand ("(4:103)", "3:23"), or at the "S" of "S3/B45" / "S7: 311".
    """
    starts: list[int] = []
    for a, b in _digit_runs(text):
        back = text[max(0, a - _WIN_BEFORE) : a][::-1]
        hit = _BEHIND_REV.match(back.lower())
        if hit is not None:
            starts.append(a - hit.end())
        elif (hit := _BEHIND_CASED_REV.match(back)) is not None:
            b_at = a - hit.end()  # "S3/B45", "Se. 5, Bi. 33": the match starts at the "S" a few characters back
            starts.extend(i for i in range(max(0, b_at - 16), b_at) if text[i] == "S")
        elif text[b : b + 1] in (":", " ") and _COLON_AFTER.match(text, b):
            if a and text[a - 1] in "(S":
                starts.append(a - 1)
            elif a > 1 and text[a - 2 : a] == "S ":
                starts.append(a - 2)
            starts.append(a)
    return sorted(starts)
