"""Scale-out on Ray (the `ray` extra): batch transcription with Ray Data (batch.py). Imported lazily by the
CLI, only when --ray is given. See docs/scaling.md."""
