"""Live per-restaurant figures: a faust-streaming app over the events and results topics
(docs/figures.md). Pure aggregation in `aggregates`, one module per adapter."""
