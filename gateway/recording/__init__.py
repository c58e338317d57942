"""Session recording: the format (format.py), its index (index.py), typed text (keysyms.py), where
recordings are kept (store.py, local.py, s3.py) and how long (retention.py). docs/recording.md."""
