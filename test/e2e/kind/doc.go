// Package e2e is the end-to-end suite that runs against a real cluster: the
// operator installed from charts/courier, the blog from charts/blog with a
// managed RabbitMQ broker, and Mailpit as the SMTP server. It talks to the
// cluster of the current kubeconfig context only through the API server
// (port-forwards included), so it needs neither kubectl nor kind itself.
//
// The tests carry the e2e build tag, so `go test ./...` never runs them:
//
//	hack/kind/up.sh    # kind cluster, images, charts, Mailpit
//	make test-e2e      # go test -tags e2e -race ./test/e2e/kind/...
//	hack/kind/down.sh
//
// The suite ends by deleting the app; hack/kind/install.sh installs it again.
// docs/operations.md says what each step checks.
package e2e
