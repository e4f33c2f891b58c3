"""The domain both services share: statuses and the state machine, the decision, the wire contracts
(commands, results, events), the outcome table and topic names. Pure: no I/O, and nothing from
services.adapters (tests/unit/test_domain_is_pure.py)."""
