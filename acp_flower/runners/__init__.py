"""Drivers that run the core in one process (the Flower drivers live in acp_flower.apps)."""
