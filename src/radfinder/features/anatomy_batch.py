"""fVLM's per-study data and its micro-batch form: per study, the spatial tokens that touch an anatomy, their
coverage, and per anatomy the report text, a normal flag, a content-derived text id and a valid flag.

`anatomy_study` gathers one study's data for every anatomy its cache and the text rules know (the training batch
field carries a list of these, model-independent); `collate_anatomy` picks a model's anatomies and pads the batch.

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
from ..text.anatomy import AnatomyTextRules, RuleAssigner, anatomy_texts, load_text_rules, strip_template, text_id
from ..text.sections import detect_language
from .store import FeatureRecord


@dataclass
class AnatomyStudyText:
    texts: list[str]  # full per-anatomy texts (fVLM convention)
    stripped: list[str]  # without the no-abnormality template (the template itself where nothing else is left)
    normal: list[bool]
    ids: list[int]  # text_id of the full text


class AnatomyTextCache:
    """Per-anatomy texts of each study (every anatomy of the text rules by default), computed once per report."""

    def __init__(self, names: Sequence[str] | None = None, rules: AnatomyTextRules | None = None):
        self.rules = rules or load_text_rules()
        self.names = list(names) if names is not None else list(self.rules.anatomies)
        missing = [a for a in self.names if a not in self.rules.anatomies]
        if missing:
            raise ConfigError(f"anatomies {missing} have no text rules (the rules know {self.rules.anatomies})")
        self.assigner = RuleAssigner(self.rules)
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
        stripped = []
        for a, t in zip(self.names, texts, strict=True):
            s = strip_template(t, a, lang, self.rules)
            stripped.append(s if s.strip() else t)
        return AnatomyStudyText(texts, stripped, [not out[a].abnormal for a in self.names],
                                [text_id(t) for t in texts])  # fmt: skip

    def of_record(self, record: StudyRecord) -> AnatomyStudyText:
        return self.of(record.findings, record.impressions)


@dataclass
class AnatomyStudy:
    """One study's fVLM data, for every anatomy its cache and text rules know (a model picks its own)."""

    key: str
    names: list[str]  # anatomies of the coverage columns ([] without a segmentation)
    tokens: np.ndarray  # (n, E) spatial tokens touching any of them
    coverage: np.ndarray  # (n, len(names))
    present: np.ndarray  # (len(names),) bool
    cut: np.ndarray  # (len(names),) bool
    text_names: list[str]
    text: AnatomyStudyText


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
    """(tokens (n, E), coverage (n, A), present (A,), cut (A,)) of one study for the anatomies `names`: the tokens
    with coverage > 0 for at least one of them. Without a segmentation: no tokens, nothing present."""
    if fr.spatial is None:
        raise ConfigError(f"{fr.key}: the feature cache has no spatial tokens; extract the features with spatial "
                          "tokens and masks (radfinder extract-features ... --masks DIR|auto)")  # fmt: skip
    e = fr.spatial.shape[-1]
    a = len(names)
    cov_rec = fr.anatomy
    if cov_rec is None:
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


def anatomy_study(fr: FeatureRecord, record: StudyRecord, texts: AnatomyTextCache) -> AnatomyStudy:
    names = list(fr.anatomy.names) if fr.anatomy is not None else []
    tok, cov, present, cut = study_tokens(fr, names)
    return AnatomyStudy(record.key, names, tok, cov, present, cut, texts.names, texts.of_record(record))


def collate_anatomy(
    studies: Sequence[AnatomyStudy], names: Sequence[str], *, exclude_cut: bool = True, strip: bool = True
) -> AnatomyBatch:
    """The (B, A) fields and padded tokens of a micro-batch for the anatomies `names` (a model's, in its order)."""
    names = list(names)
    a, b = len(names), len(studies)
    picked = []
    for st in studies:
        missing = [n for n in names if n not in st.text_names]
        if missing:
            raise ConfigError(f"{st.key}: no report text rules for anatomies {missing}")
        if st.names:
            absent = [n for n in names if n not in st.names]
            if absent:
                raise ConfigError(f"{st.key}: the feature cache's anatomy coverage has {st.names}, not {absent}; "
                                  "extract with a groups YAML that defines them")  # fmt: skip
            cols = [st.names.index(n) for n in names]
            cov = st.coverage[:, cols]
            keep = cov.sum(axis=1) > 0
            picked.append((st.tokens[keep], cov[keep], st.present[cols], st.cut[cols]))
        else:
            picked.append((st.tokens[:0], np.zeros((0, a), np.float32), np.zeros(a, bool), np.ones(a, bool)))
    n = max(1, max(p[0].shape[0] for p in picked))
    e = studies[0].tokens.shape[1]
    tokens = np.zeros((b, n, e), np.float32)
    cov = np.zeros((b, a, n), np.float32)
    valid = np.zeros((b, a), bool)
    normal = np.zeros((b, a), bool)
    ids = np.zeros((b, a), np.int64)
    enc: list[list[str]] = []
    for i, ((tok, c, present, cut), st) in enumerate(zip(picked, studies, strict=True)):
        tokens[i, : tok.shape[0]] = tok
        cov[i, :, : c.shape[0]] = c.T
        valid[i] = present & (~cut if exclude_cut else True)
        idx = [st.text_names.index(n) for n in names]
        normal[i] = [st.text.normal[j] for j in idx]
        ids[i] = [st.text.ids[j] for j in idx]
        enc.append([(st.text.stripped if strip else st.text.texts)[j] for j in idx])
    return AnatomyBatch(names, torch.from_numpy(tokens), torch.from_numpy(cov), torch.from_numpy(valid),
                        torch.from_numpy(normal), torch.from_numpy(ids), enc)  # fmt: skip


def make_anatomy_batch(
    features: Sequence[FeatureRecord],
    records: Sequence[StudyRecord],
    texts: AnatomyTextCache,
    *,
    names: Sequence[str] | None = None,
    exclude_cut: bool = True,
    strip: bool = True,
) -> AnatomyBatch:
    """`collate_anatomy` of the studies' `anatomy_study` for `names` (default: the text cache's anatomies)."""
    studies = [anatomy_study(fr, r, texts) for fr, r in zip(features, records, strict=True)]
    return collate_anatomy(studies, texts.names if names is None else names, exclude_cut=exclude_cut, strip=strip)
