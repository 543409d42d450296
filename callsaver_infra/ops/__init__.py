"""Operator tools that act on a deployed environment (the `callsaver-infra` CLI). Imports nothing from dev."""
