"""Data layer: text sources, corpus preparation (BPE + memmap token files), memmap loading, batch samplers, and
instruction data (instruct_template, instruct_sources, builtin_instructions, instruct_prepare, instruct_dataset,
instruct_batches)."""
from lmcore.data.memmap import MemmapCorpus, MemmapDataset, load_meta
from lmcore.data.prepare import prepare_corpus
from lmcore.data.samplers import (
    DocumentSampler, RowSampler, WindowSampler, eval_documents, eval_windows, micro_samplers,
)
from lmcore.data.sources import Document, DocumentStream, Source, open_source, split_documents

__all__ = [
    "Document", "DocumentStream", "Source", "open_source", "split_documents", "prepare_corpus",
    "load_meta", "MemmapCorpus", "MemmapDataset", "WindowSampler", "DocumentSampler", "RowSampler",
    "micro_samplers", "eval_windows", "eval_documents",
]
