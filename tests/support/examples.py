"""Example connector configurations shared by the tests."""

# The full example of the configuration contract: every section, both ways to pick topics
# (topics: and pattern:), a where: filter, templates, @metadata and properties rules.
# The tests read it with USERFLUX_API_KEY set; KAFKA_BOOTSTRAP_SERVERS is optional.
CONTRACT_EXAMPLE = r"""
kafka:
  bootstrap.servers: ${KAFKA_BOOTSTRAP_SERVERS:-localhost:9092}
  group.id: userflux-connector
  auto.offset.reset: earliest
userflux:
  base_url: https://integration-api.userflux.co
  api_key: ${USERFLUX_API_KEY}
  location_enrichment: false
  batch_size: 50
  linger_ms: 200
  max_in_flight: 8
  request_timeout_s: 10
  retry: {initial_backoff_ms: 250, max_backoff_ms: 30000}
on_invalid: dead_letter
dead_letter: {topic: userflux-connector-dlq}
metrics: {port: 9464}
mappings:
  - topics: [web-events]
    event:
      name: event
      userId: user.id
      anonymousId: anonymous_id
      timestamp: sent_at
      properties: properties
  - pattern: "^app\\..+"
    location_enrichment: true
    where: {path: type, in: [track, screen]}
    event:
      name: {template: "{type}_{action}"}
      userId: [user.id, "@key"]
      anonymousId: "@headers.device-id"
      timestamp: "@timestamp"
      properties:
        from: .
        exclude: [type, action, user]
        set: {source: {value: mobile}, topic: "@topic"}
"""
