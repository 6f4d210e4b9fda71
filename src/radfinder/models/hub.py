"""Released weights by Hugging Face id: `ORG/NAME` or `ORG/NAME@REVISION` wherever a checkpoint folder is accepted.

`resolve_weights(name_or_path, kind)` is the one place such a string becomes a folder:
- an existing local path always means that path (its provenance is read from the folder when it has one);
- otherwise a string shaped like a repo id is fetched with `huggingface_hub.snapshot_download`, restricted to the
  files the loader of `kind` reads (`ALLOW_PATTERNS`), honouring HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE and
  HF_TOKEN as they are set when the call is made (huggingface_hub itself reads them once, at import);
- every fetched file is checked against the hash its cache blob is named by (sha256 for LFS files, the git blob
  sha1 otherwise), or against the sha256 list of a `radfinder download --to` folder, before any loader reads it
  (`radfinder.models.hub_files`).

The returned `HubSource` (repo id, revision asked for, commit) is what feature caches, training runs, libraries and
metrics.json record, so a result names the exact weights it came from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError, RadfinderError
from .hub_files import COMMIT, PROVENANCE_FILE, file_digest, verify_folder

# What each loader reads; nothing else of a repo is downloaded (a repo may hold training logs, other formats, ...).
ALLOW_PATTERNS: dict[str, list[str]] = {
    # `read_pretrained_dir`: radfinder checkpoints and the official export (tokenizer at the root or in text/)
    "checkpoint": ["config.json", "model.safetensors", "preprocess.json", "labels.json", "calibration.json", "text/*",
                   "tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "added_tokens.json"],
    # `build_text_backbone` / `load_tokenizer`: a transformers model folder (single or sharded safetensors)
    "text": ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*", "vocab*", "merges.txt",
             "special_tokens_map.json", "added_tokens.json", "sentence_bert_config.json", "modules.json",
             "1_Pooling/*"],
    # a tokenizer alone: the official export names its tokenizer repo (`text_tokenizer_name`) instead of shipping it
    "tokenizer": ["tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "added_tokens.json"],
    # `models.spectre`: the SPECTRE component files RadFinder starts from (repo cclaess/SPECTRE), one per part
    "spectre": ["spectre_backbone_vit_large_patch16_128.pt", "spectre_combiner_feature_vit_large.pt",
                "SigLIP_projection_head_image.pt", "SigLIP_projection_head_text.pt",
                "spectre_qwen3_embedding_0.6B_lora.pt"],
}
DEFAULT_REVISION = "main"
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"^(?P<repo>{_REPO_PART}/{_REPO_PART})(?:@(?P<rev>[A-Za-z0-9._/-]+))?$")
_TRUE = {"1", "ON", "YES", "TRUE"}


class HubError(RadfinderError):
    """A Hugging Face repo could not be resolved to verified local files."""


@dataclass(frozen=True)
class HubSource:
    """Where a folder's weights came from: the repo, the revision asked for, and the commit it resolved to."""

    repo_id: str
    revision: str
    commit: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @property
    def pinned(self) -> str:
        return f"{self.repo_id}@{self.commit}"

    @classmethod
    def from_dict(cls, data: Any, where: Path) -> HubSource:
        try:
            src = cls(str(data["repo_id"]), str(data["revision"]), str(data["commit"]))
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{where}: provenance needs repo_id, revision and commit ({exc})") from exc
        if not COMMIT.match(src.commit):
            raise CheckpointError(f"{where}: commit {src.commit!r} is not a 40-digit hash")
        return src


@dataclass(frozen=True)
class Resolved:
    path: Path
    source: HubSource | None  # None: a local folder with no hub origin

    def record(self) -> dict[str, str] | None:
        return self.source.as_dict() if self.source is not None else None


def parse_hub_id(text: str) -> tuple[str, str] | None:
    """(repo_id, revision) of `ORG/NAME[@REV]`, or None when `text` cannot be a repo id (two slashes before '@',
    a leading '.', '/' or '~', a file suffix such as .yaml)."""
    m = _HUB_ID.match(str(text).strip())
    if m is None or re.search(r"\.(ya?ml|json|safetensors|pt|npz)$", m.group("repo"), re.IGNORECASE):
        return None
    return m.group("repo"), m.group("rev") or DEFAULT_REVISION


def looks_like_hub_id(text: str | Path) -> bool:
    """True for a string that is not an existing path and parses as a repo id."""
    return not Path(str(text)).expanduser().exists() and parse_hub_id(str(text)) is not None


def cache_dir() -> Path:
    """The hub cache as huggingface_hub would pick it from the environment now."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    return any(os.environ.get(k, "").upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None  # None: huggingface_hub falls back to its stored login


def download_command(repo_id: str, revision: str) -> str:
    return f"radfinder download {repo_id}" + ("" if revision == DEFAULT_REVISION else f"@{revision}")


def _snapshot(repo_id: str, revision: str, patterns: list[str], cache_only: bool = False) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"repo {repo_id} revision {revision}"
    fetch = f"run `{download_command(repo_id, revision)}` on a machine with network and copy the cache " \
            f"(or the --to folder) here"
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=patterns, cache_dir=str(cache_dir()),
                                   token=_token(), local_files_only=offline() or cache_only)
    except (GatedRepoError, RepositoryNotFoundError) as exc:
        raise HubError(f"{where}: not found or not accessible (gated or private repos need HF_TOKEN): "
                       f"{type(exc).__name__}") from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"{where}: the revision does not exist on the Hub") from exc
    except LocalEntryNotFoundError as exc:
        if type(exc).__name__ == "IncompleteSnapshotError":  # cached, but files are missing (interrupted download)
            raise HubError(f"{where}: {exc}") from exc
        mode = ("HF_HUB_OFFLINE is set" if offline() else "only the cache is searched" if cache_only
                else "the Hub could not be reached")
        raise HubError(f"{where} is not in the hub cache {cache_dir()} and {mode}; {fetch}") from exc
    except HfHubHTTPError as exc:
        raise HubError(f"{where}: Hub request failed ({exc}); {fetch}") from exc
    except OSError as exc:  # IncompleteSnapshotError and file-system errors
        raise HubError(f"{where}: {exc}") from exc
    return Path(folder)


def _snapshot_commit(folder: Path) -> str | None:
    """The commit of a folder inside a hub cache (`.../models--ORG--NAME/snapshots/<commit>`)."""
    return folder.name if folder.parent.name == "snapshots" and COMMIT.match(folder.name) else None


def _repo_of_storage(storage: Path) -> str | None:
    parts = storage.name.split("--")
    return "/".join(parts[1:]) if parts[0] == "models" and len(parts) == 3 else None


def source_of_folder(folder: Path) -> HubSource | None:
    """The hub origin of a local folder: a `radfinder download --to` folder names it in its provenance file; a
    snapshot folder of a hub cache (`models--ORG--NAME/snapshots/<commit>`) by its place."""
    prov = folder / PROVENANCE_FILE
    if prov.is_file():
        try:
            return HubSource.from_dict(json.loads(prov.read_text()), prov)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{prov}: not valid JSON ({exc})") from exc
    commit = _snapshot_commit(folder)
    repo = _repo_of_storage(folder.parent.parent) if commit else None
    if repo is None:
        return None
    return HubSource(repo, _revision_naming(folder.parent.parent, commit), commit)


def _revision_naming(storage: Path, commit: str) -> str:
    """The ref (e.g. main) that points at `commit` in the cache, else the commit itself."""
    refs = storage / "refs"
    for ref in sorted(refs.rglob("*")) if refs.is_dir() else ():
        if ref.is_file() and ref.read_text().strip() == commit:
            return ref.relative_to(refs).as_posix()
    return commit


# ------------------------------------------------------------------------------------------ entry points
def resolve_weights(name_or_path: str | Path, kind: str = "checkpoint", cache_only: bool = False) -> Resolved:
    """A folder for a local path or a hub id (see the module doc). A string that is neither an existing path nor
    shaped like a repo id comes back unchanged with no source: the caller's own "not found" error names it.
    `cache_only`: look in the hub cache only, never the network (for what a local folder merely names)."""
    if kind not in ALLOW_PATTERNS:
        raise ConfigError(f"unknown weights kind {kind!r} ({', '.join(ALLOW_PATTERNS)})")
    path = Path(str(name_or_path)).expanduser()
    if path.exists():
        source = source_of_folder(path.resolve()) if path.is_dir() else None
        if path.is_dir() and source is not None:
            verify_folder(path, source)
        return Resolved(path, source)
    parsed = parse_hub_id(str(name_or_path))
    if parsed is None:
        return Resolved(path, None)
    try:
        return _fetch(*parsed, kind, cache_only)
    except HubError as exc:  # a mistyped relative path also looks like ORG/NAME: say both readings failed
        raise HubError(f"{exc} (and no local folder {str(name_or_path)!r} exists)") from exc


def _fetch(repo_id: str, revision: str, kind: str, cache_only: bool = False) -> Resolved:
    folder = _snapshot(repo_id, revision, ALLOW_PATTERNS[kind], cache_only)
    commit = _snapshot_commit(folder)
    if commit is None:
        raise HubError(f"repo {repo_id} revision {revision}: {folder} is not a snapshot folder of the hub cache")
    source = HubSource(repo_id, revision, commit)
    verify_folder(folder, source)
    return Resolved(folder, source)


def companion_tokenizer(folder: Path) -> str | None:
    """The tokenizer repo an official export names (`text_tokenizer_name` in config.json) when the folder has no
    tokenizer files of its own; None otherwise."""
    from .text import has_tokenizer_files

    try:
        name = json.loads((folder / "config.json").read_text()).get("text_tokenizer_name")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(name, str) or parse_hub_id(name) is None:
        return None
    return None if any(has_tokenizer_files(d) for d in (folder, folder / "text")) else name


def companions_of_folder(folder: Path) -> dict[str, HubSource]:
    """Other repos a `--to` folder holds files of (the tokenizer copied into text/), from its provenance file."""
    prov = folder / PROVENANCE_FILE
    if not prov.is_file():
        return {}
    data = json.loads(prov.read_text()).get("companions") or {}
    return {role: HubSource.from_dict(rec, prov) for role, rec in data.items()}


def download(name: str, to: str | Path | None = None, kind: str = "checkpoint"
             ) -> tuple[Resolved, list[str], dict[str, HubSource]]:
    """Fetch `ORG/NAME[@REV]` into the hub cache (or find it there offline), with the tokenizer repo an official
    export names; with `to`, also copy the files as real files into a self-contained folder (the tokenizer under
    text/) with a provenance file (repo ids, commits, sha256 of each file) for offline machines.
    Returns the folder to use, its file list and the companion repos fetched."""
    from huggingface_hub.utils import filter_repo_objects

    parsed = parse_hub_id(name)
    if parsed is None:
        raise ConfigError(f"{name!r} is not a Hugging Face repo id (ORG/NAME or ORG/NAME@REVISION)")
    if kind not in ALLOW_PATTERNS:
        raise ConfigError(f"unknown weights kind {kind!r} ({', '.join(ALLOW_PATTERNS)})")
    main = _fetch(*parsed, kind)
    companions: dict[str, Resolved] = {}
    tokenizer = companion_tokenizer(main.path) if kind == "checkpoint" else None
    if tokenizer is not None:
        companions["tokenizer"] = _fetch(*parse_hub_id(tokenizer), "tokenizer")

    def listing(res: Resolved, patterns: list[str]) -> list[str]:
        # a snapshot may also hold files an earlier, wider download fetched: only what this loader reads
        every = sorted(p.relative_to(res.path).as_posix() for p in res.path.rglob("*") if p.is_file())
        return list(filter_repo_objects(every, allow_patterns=patterns))

    files = listing(main, ALLOW_PATTERNS[kind])
    sources = {role: res.source for role, res in companions.items()}
    if to is None:
        return main, files, sources
    dest = Path(to)
    if dest.exists() and any(dest.iterdir()):
        existing = source_of_folder(dest)
        if existing is None or existing.commit != main.source.commit:
            raise ConfigError(f"{dest} exists and is not a download of {main.source.pinned}; choose an empty folder")
    copies = [(main.path / f, f) for f in files]
    if "tokenizer" in companions:
        tok = companions["tokenizer"]
        copies += [(tok.path / f, f"text/{f}") for f in listing(tok, ALLOW_PATTERNS["tokenizer"])]
    sums = {}
    for src, rel in copies:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)  # follows the cache's symlinks: real files
        sums[rel] = file_digest(target, "sha256")
    record = {**main.source.as_dict(), "kind": kind, "sha256": sums,
              "companions": {role: src.as_dict() for role, src in sources.items()}}
    (dest / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return Resolved(dest, main.source), sorted(sums), sources


def weights_provenance(model) -> dict[str, Any]:
    """What a loaded model's weights are, for result files: `hub` the parts loaded by id (repo id, revision,
    commit); `derived_from` the released weights a local checkpoint was trained from. Empty for purely local."""
    out: dict[str, Any] = {}
    if getattr(model, "hub_sources", None):
        out["hub"] = dict(model.hub_sources)
    if getattr(model, "derived_from", None):
        out["derived_from"] = dict(model.derived_from)
    return out
