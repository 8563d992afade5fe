"""Operator commands (`status`, `scale`, `reload`, `stop`) and the control wire schema
they share with the supervisor."""
