"""Data layer: text sources, corpus preparation (BPE + memmap token files), memmap loading, batch samplers."""
from lmcore.data.memmap import MemmapCorpus, MemmapDataset, load_meta
from lmcore.data.prepare import prepare_corpus
from lmcore.data.samplers import DocumentSampler, WindowSampler, eval_documents, eval_windows
from lmcore.data.sources import Document, DocumentStream, Source, open_source, split_documents

__all__ = [
    "Document", "DocumentStream", "Source", "open_source", "split_documents", "prepare_corpus",
    "load_meta", "MemmapCorpus", "MemmapDataset", "WindowSampler", "DocumentSampler",
    "eval_windows", "eval_documents",
]
