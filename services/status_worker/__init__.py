"""The status worker: applies commands serially per order, publishes one outcome per command."""
