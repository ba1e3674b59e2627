"""Instruction fine-tuning: instruction sources, the prompt template, prepared rows with response-only loss
masks, batches for the one trainer, fine-tuning wiring and instruction-following evaluation."""
