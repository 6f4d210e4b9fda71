"""A searchable scan library: embeddings in FAISS, metadata in SQLite, text and scan search, per-study views.

    summary = build_library("checkpoints/radfinder", "data/ct-rate", "lib", kind="ctrate", split="valid")
    lib = Library("lib")
    lib.search("Right lower lobe consolidation.", k=10)        # {"results": [{"study", "score", "depth_mm", ...}]}
    lib.search_like("scan.nii.gz", k=5)

The CLI mirrors it: `radfinder library build/add/index/info`, `radfinder search`, `radfinder serve`.
"""

from .build import INDEX_FILES, add_to_library, build_library, checkpoint_hash, load_records, rebuild_index
from .index import AUTO_CROSSOVER, INDEX_KINDS, build_index
from .quality import finding_precision
from .search import MAX_K, OVER, Library, parse_filters
from .slices import WINDOWS, SliceLayout, render_slice
from .store import LibraryError, LibraryStore

__all__ = [
    "AUTO_CROSSOVER",
    "INDEX_FILES",
    "INDEX_KINDS",
    "MAX_K",
    "OVER",
    "WINDOWS",
    "Library",
    "LibraryError",
    "LibraryStore",
    "SliceLayout",
    "add_to_library",
    "build_index",
    "build_library",
    "checkpoint_hash",
    "finding_precision",
    "load_records",
    "parse_filters",
    "rebuild_index",
    "render_slice",
]
