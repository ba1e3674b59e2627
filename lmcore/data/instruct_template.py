"""The one prompt template (Alpaca's, as in the README's "Instruction fine-tuning") and the instruction example record every source produces.

    ### Instruction:
    {instruction}

    ### Input:
    {input}

    ### Response:
    {output}<eos>

The Input block is left out when `input` is empty. The prompt is everything up to and including the newline
after "### Response:"; the response is `output`, then <eos> (an id inserted by code, never text).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

INSTRUCTION_HEADER = "### Instruction:"
INPUT_HEADER = "### Input:"
RESPONSE_HEADER = "### Response:"
HEADERS = (INSTRUCTION_HEADER, INPUT_HEADER, RESPONSE_HEADER)


@dataclass
class Example:
    """One instruction example; `family` names a built-in task (exact-match scored) or a source's category."""

    instruction: str
    input: str
    output: str
    family: str | None = None
    where: str = ""  # file:line or hub row, for messages

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (as stored in the prepared split's examples file)."""
        return asdict(self)


def format_prompt(instruction: str, input: str = "") -> str:  # noqa: A002 - the field's name in every dataset
    """The template up to the response: instruction, the optional input block, and the response header."""
    parts = [f"{INSTRUCTION_HEADER}\n{instruction}\n\n"]
    if input.strip():
        parts.append(f"{INPUT_HEADER}\n{input}\n\n")
    parts.append(f"{RESPONSE_HEADER}\n")
    return "".join(parts)


def format_example(example: Example) -> tuple[str, str]:
    """(prompt text, response text) of an example; the response's <eos> is added as an id when tokenising."""
    return format_prompt(example.instruction, example.input), example.output


def has_template_header(text: str) -> bool:
    """Whether generated text emits a template header (it should answer, not start a new turn)."""
    return any(h in text for h in HEADERS)
