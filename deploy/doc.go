// Package deploy holds topoha's deployment assets — the systemd unit, the Kubernetes manifests, the
// Grafana dashboard, the Prometheus alert rules and an example VIP hook — and, in its tests, their
// validation: every metric they query is documented in docs/metrics.md, every PromQL expression parses,
// every alert has a runbook section, the unit and the manifests start `topoha run` with real flags and
// a config that topoha accepts, and the hook does what it says. It has no code of its own.
package deploy
