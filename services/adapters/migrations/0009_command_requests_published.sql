-- Whether a claimed command is known to have reached Kafka (issue 10, scenario 2). The claim is
-- committed before publishing; if the API dies (or Kafka does not confirm) in between, the claim
-- stays unpublished and a retry with the same key publishes the same command (same command id:
-- the worker's inbox applies it at most once) instead of answering from a claim whose command
-- may never have been sent. Claims from before this migration count as unpublished: a retry
-- republishes them, which the inbox makes harmless.
ALTER TABLE command_requests ADD COLUMN published_at timestamptz;

GRANT UPDATE (published_at) ON command_requests TO orderstatus_app;
