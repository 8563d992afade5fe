"""The supervisor side: the arbiter that keeps the pool, its pure policy, and the runner
that starts it. Nothing outside supervisor.arbiter.runner imports the Arbiter."""
