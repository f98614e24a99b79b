"""Tests of acp_flower.data."""
