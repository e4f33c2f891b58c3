"""The webhook notifier: a consumer group on the events topic that delivers each event, signed per
the Standard Webhooks spec, to the endpoints of the event's restaurant, in per-order order."""
