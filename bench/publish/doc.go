// Package publish benchmarks the kit's publish path (messaging.Broker.Publish
// and messaging.BatchPublisher.PublishBatch) against the raw client libraries
// (amqp091-go and nats.go/jetstream) with the same confirm window, on a real
// RabbitMQ node and an embedded NATS server. run.sh runs it; RESULTS.md holds
// the last run.
package publish
