"""The command API: authenticates, validates, publishes commands and answers with their outcome."""
