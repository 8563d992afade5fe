"""The supervisor's own servers: the control socket and the Prometheus endpoint. They read
a snapshot of the pool, never the arbiter."""
