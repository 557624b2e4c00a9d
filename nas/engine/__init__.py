"""The search engine: settings, the study and its storage, the one typed record of a trial, the Optuna bridge with its
in-memory ledger and heartbeat, the Ray Tune wiring and schedulers, and the progress events a run tells its printer.

The flow of nas/: engine (search) -> front -> evaluate -> analysis -> export.
"""
