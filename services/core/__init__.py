"""Contracts shared by the command API and the status worker: statuses, decisions, messages, topics."""
