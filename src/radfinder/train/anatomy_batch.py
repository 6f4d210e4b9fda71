"""fVLM's batch fields: per study, the spatial tokens that touch an anatomy, their coverage, and per anatomy the
report text, a normal flag, a content-derived text id and a valid flag.

Texts come from `radfinder.text.anatomy.anatomy_texts` (rules backend, EN/DE detected per report): an anatomy
without an abnormal sentence gets fVLM's "{Anatomy} shows no significant abnormalities." and is normal. `text_ids`
hash the full per-anatomy text (SHA-256, `text_id`), so equal texts have equal ids in every process. The text that
is *encoded* drops the template prefix when the model's config says so (fVLM does), keeping the template when
nothing else is left.

Tokens: each study's spatial grid (Hg, Wg, Dg, Sh, Sw, T, E) is flattened and reduced to the tokens with coverage
> 0 for at least one of the model's anatomies (the head gives the others zero weight anyway); studies are padded to
the longest with zero-coverage tokens. valid (B, A) = the study has a segmentation, the anatomy has a token, and it
is not cut by the crop (unless the config keeps cut anatomies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.records import StudyRecord
from ..errors import ConfigError
from ..features.store import FeatureRecord
from ..text.anatomy import AnatomyTextRules, RuleAssigner, anatomy_texts, load_text_rules, strip_template, text_id
from ..text.sections import detect_language


@dataclass
class AnatomyStudyText:
    texts: list[str]  # full per-anatomy texts (fVLM convention)
    encode: list[str]  # what the text tower encodes
    normal: list[bool]
    ids: list[int]


class AnatomyTextCache:
    """Per-anatomy texts of each study, computed once per report (rules are deterministic)."""

    def __init__(self, names: Sequence[str], strip: bool = True, rules: AnatomyTextRules | None = None):
        self.names = list(names)
        self.rules = rules or load_text_rules()
        missing = [a for a in self.names if a not in self.rules.anatomies]
        if missing:
            raise ConfigError(f"anatomies {missing} have no text rules (the rules know {self.rules.anatomies})")
        self.assigner = RuleAssigner(self.rules)
        self.strip = strip
        self._cache: dict[tuple[str, str], AnatomyStudyText] = {}

    def of(self, findings: str, impressions: str) -> AnatomyStudyText:
        key = (findings, impressions)
        got = self._cache.get(key)
        if got is None:
            got = self._cache[key] = self._compute(findings, impressions)
        return got

    def _compute(self, findings: str, impressions: str) -> AnatomyStudyText:
        lang = detect_language(f"{findings}\n{impressions}")
        lang = lang if lang in ("en", "de") else "en"
        out = anatomy_texts(findings, impressions, lang, self.assigner, self.rules, self.names)
        texts = [out[a].text for a in self.names]
        encode = []
        for a, t in zip(self.names, texts, strict=True):
            s = strip_template(t, a, lang, self.rules) if self.strip else t
            encode.append(s if s.strip() else t)
        return AnatomyStudyText(texts, encode, [not out[a].abnormal for a in self.names], [text_id(t) for t in texts])

    def of_record(self, record: StudyRecord) -> AnatomyStudyText:
        return self.of(record.findings, record.impressions)


@dataclass
class AnatomyBatch:
    names: list[str]
    tokens: torch.Tensor  # (B, N, E) spatial tokens that touch an anatomy (zero padding)
    coverage: torch.Tensor  # (B, A, N) fraction of each token inside each anatomy (0 on padding)
    valid: torch.Tensor  # (B, A) bool
    normal: torch.Tensor  # (B, A) bool
    text_ids: torch.Tensor  # (B, A) int64, content-derived
    texts: list[list[str]]  # (B, A) texts to encode

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def to(self, device: torch.device, dtype: torch.dtype) -> AnatomyBatch:
        return AnatomyBatch(self.names, self.tokens.to(device, dtype=dtype), self.coverage.to(device, dtype=dtype),
                            self.valid.to(device), self.normal.to(device), self.text_ids.to(device),
                            self.texts)  # fmt: skip

    def flat_texts(self) -> list[str]:
        return [t for row in self.texts for t in row]


def study_tokens(fr: FeatureRecord, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tokens (n, E), coverage (n, A), present (A,), cut (A,)) of one study for the anatomies `names`."""
    if fr.spatial is None:
        raise ConfigError(f"{fr.key}: the feature cache has no spatial tokens; extract the features with spatial "
                          "tokens and masks (radfinder extract-features ... --masks DIR|auto)")  # fmt: skip
    e = fr.spatial.shape[-1]
    a = len(names)
    cov_rec = fr.anatomy
    if cov_rec is None:  # no segmentation: every anatomy invalid
        return np.zeros((0, e), np.float32), np.zeros((0, a), np.float32), np.zeros(a, bool), np.ones(a, bool)
    missing = [n for n in names if n not in cov_rec.names]
    if missing:
        raise ConfigError(f"{fr.key}: the feature cache's anatomy coverage has {cov_rec.names}, not {missing}; "
                          "extract with a groups YAML that defines them")  # fmt: skip
    cols = [cov_rec.names.index(n) for n in names]
    cov = cov_rec.coverage[..., cols].reshape(-1, a)
    keep = cov.sum(axis=1) > 0
    tokens = np.asarray(fr.spatial, dtype=np.float32).reshape(-1, e)[keep]
    return tokens, cov[keep].astype(np.float32), cov.max(axis=0) > 0, np.asarray(cov_rec.cut, bool)[cols]


def make_anatomy_batch(
    features: Sequence[FeatureRecord],
    records: Sequence[StudyRecord],
    texts: AnatomyTextCache,
    *,
    exclude_cut: bool = True,
) -> AnatomyBatch:
    """The fVLM fields of one micro-batch (see module doc)."""
    names = texts.names
    parts = [study_tokens(fr, names) for fr in features]
    n = max(1, max(p[0].shape[0] for p in parts))
    b, a = len(parts), len(names)
    e = features[0].spatial.shape[-1]
    tokens = np.zeros((b, n, e), np.float32)
    cov = np.zeros((b, a, n), np.float32)
    valid = np.zeros((b, a), bool)
    normal = np.zeros((b, a), bool)
    ids = np.zeros((b, a), np.int64)
    enc: list[list[str]] = []
    for i, ((tok, c, present, cut), rec) in enumerate(zip(parts, records, strict=True)):
        tokens[i, : tok.shape[0]] = tok
        cov[i, :, : c.shape[0]] = c.T
        valid[i] = present & (~cut if exclude_cut else True)
        st = texts.of_record(rec)
        normal[i] = st.normal
        ids[i] = st.ids
        enc.append(list(st.encode))
    return AnatomyBatch(list(names), torch.from_numpy(tokens), torch.from_numpy(cov), torch.from_numpy(valid),
                        torch.from_numpy(normal), torch.from_numpy(ids), enc)  # fmt: skip
