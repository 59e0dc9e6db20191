"""The language-model side of DELRec: backbone loading, the soft prompt, and candidate scoring."""
