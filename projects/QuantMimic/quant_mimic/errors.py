"""One exception type for bad user input: its message is a single sentence naming the problem and the fix."""

from __future__ import annotations

_NAME = "QuantMimicInputError: "


class QuantMimicInputError(Exception):
    """Bad input from the user (config, weights, data). ``train_net.py`` prints it as one line and exits 2."""


def one_line(error: BaseException) -> str:
    """The sentence of ``error`` on one line.

    An error raised in a DataLoader worker process reaches the trainer re-raised by PyTorch with the
    worker's whole traceback as its message ("Caught QuantMimicInputError in DataLoader worker process
    0. Original Traceback ... QuantMimicInputError: <sentence>"); this returns the sentence alone.
    """
    text = str(error).strip()
    if "\n" in text and _NAME in text:
        text = text.rsplit(_NAME, 1)[1].strip()
    return " ".join(text.split())
