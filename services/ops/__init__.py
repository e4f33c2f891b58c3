"""Operator tools: `orderstatus doctor` (the runbook's investigations as one command) and
`orderstatus watch` (a live terminal view), with their SQL in queries.py."""
