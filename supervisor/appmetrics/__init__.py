"""The application's own prometheus_client metrics, pooled over every worker.

Each worker's values live in a shared-memory area the supervisor created
before forking it (:mod:`.area`); the worker writes them there directly
(:mod:`.values`, installed only when the app imports prometheus_client);
the supervisor reads the areas of live workers at scrape time and folds a
dead worker's counters into one retired total when it reaps it
(:mod:`.harvest`, :mod:`.pooling`).
"""
