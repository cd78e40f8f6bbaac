"""Scale-out on Ray (the `ray` extra): batch transcription with Ray Data (batch.py), and serving from replicas
of one or more models on Ray Serve behind one ingress (serving.py, router.py, metrics.py). Imported lazily by
the CLI, only when --ray is given. See docs/scaling.md."""
