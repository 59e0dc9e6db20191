"""delrec: DELRec (distilling sequential patterns into LLM soft prompts) as installable software."""

__version__ = "0.1.0"


class DelrecError(Exception):
    """A user-facing error: the message is one line that says what is wrong and where."""
