// Package rules embeds the alert rules of courier-alerts.yaml, so the
// operator builds each app's PrometheusRule from the very file that promtool
// tests and the blog chart ships, never from a copy.
package rules

import _ "embed"

// CourierAlerts is courier-alerts.yaml: a Prometheus rule file, whose
// top-level "groups" is also the spec of a prometheus-operator
// PrometheusRule.
//
//go:embed courier-alerts.yaml
var CourierAlerts []byte
