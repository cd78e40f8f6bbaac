"""Data sets: synthetic multilingual speech (espeak-ng + sox over Debian's fortune texts) with a
deterministic disjoint train/test split, and a loader for a local copy of FLEURS."""
