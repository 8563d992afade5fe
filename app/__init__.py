"""The reference agent service."""
