# Courier: the operator (operator/) and the blog services (services/).
# Kubebuilder v4 target names; tools are pinned and installed into ./bin.

# Image URLs used by docker-build and deploy.
REGISTRY ?= ghcr.io/courier-dev
TAG ?= latest
IMG ?= $(REGISTRY)/courier-operator:$(TAG)
SERVICES := gateway users posts mailer
BINARIES := courier-operator $(SERVICES)

CONTAINER_TOOL ?= docker
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

GOBIN ?= $(shell go env GOBIN)
ifeq ($(GOBIN),)
GOBIN = $(shell go env GOPATH)/bin
endif

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC from the API markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./operator/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	# The operator chart ships the same generated CRD and RBAC rules. The CRD
	# is rendered by templates/crds.yaml (crds.install, crds.keep), so
	# helm upgrade updates it; helm never upgrades a chart's crds/.
	rm -f charts/courier/files/crds/*.yaml
	cp config/crd/bases/*.yaml charts/courier/files/crds/
	cp config/rbac/role.yaml charts/courier/files/manager-role.yaml
	# The blog chart ships the alert rules and the dashboard of config/prometheus.
	cp config/prometheus/rules/courier-alerts.yaml config/prometheus/dashboards/courier-app.json charts/blog/files/

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods from the API markers.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./operator/api/..."

.PHONY: fmt
fmt: ## Run go fmt against code.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet against code.
	go vet ./...

.PHONY: test
test: manifests generate fmt vet envtest helm kustomize ## Run every test (unit, envtest, real brokers, local e2e, installers) with -race.
	KUBEBUILDER_ASSETS="$$($(ENVTEST))" HELM="$(HELM)" KUSTOMIZE="$(KUSTOMIZE)" \
		go test -race -count=1 -timeout 30m ./... -coverprofile cover.out

.PHONY: test-e2e
test-e2e: ## Run the end-to-end suite: on the kind cluster of hack/kind/up.sh, or on the local node when there is no kind.
	./hack/test-e2e.sh

.PHONY: bench
bench: ## Run the benchmarks against their peers and rewrite bench/*/RESULTS.md.
	./bench/http/run.sh
	./bench/publish/run.sh > bench/publish/RESULTS.md
	./bench/e2e/run.sh
	./bench/operator/run.sh

.PHONY: lint
lint: golangci-lint ## Run golangci-lint (.golangci.yml), the kind suite included.
	$(GOLANGCI_LINT) run
	$(GOLANGCI_LINT) run --build-tags e2e ./test/e2e/kind/...

.PHONY: lint-fix
lint-fix: golangci-lint ## Run golangci-lint and apply its fixes.
	$(GOLANGCI_LINT) run --fix

##@ Build

.PHONY: build
build: manifests generate fmt vet ## Build the operator and the four services into ./bin.
	CGO_ENABLED=0 go build -o bin/courier-operator ./operator/cmd
	for s in $(SERVICES); do CGO_ENABLED=0 go build -o bin/$$s ./services/$$s; done

.PHONY: run
run: manifests generate fmt vet envtest ## Run the operator against the current kubeconfig, or a local control plane when there is none.
	KUBEBUILDER_ASSETS="$$($(ENVTEST))" go run ./hack/controlplane

.PHONY: demo
demo: ## Run the whole product in pods on a local node (no Docker): cluster, images, charts, the blog Ready, port-forwards.
	./hack/demo.sh up

.PHONY: demo-down
demo-down: ## Stop what make demo started (port-forwards and the local node).
	./hack/demo.sh down

.PHONY: local
local: ## Run the blog's four services, a broker and an SMTP sink on localhost (BROKER=nats|rabbitmq).
	go run ./hack/local -broker $(or $(BROKER),nats)

.PHONY: docker-build
docker-build: ## Build one image per binary.
	for b in $(BINARIES); do $(CONTAINER_TOOL) build --target $$b -t $(REGISTRY)/$$b:$(TAG) .; done

.PHONY: docker-push
docker-push: ## Push the images.
	for b in $(BINARIES); do $(CONTAINER_TOOL) push $(REGISTRY)/$$b:$(TAG); done

.PHONY: build-installer
build-installer: manifests generate kustomize ## Write dist/install.yaml: the CRD and the operator in one file.
	mkdir -p dist
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default > dist/install.yaml

##@ Release

# The version a release is built as: the v* tag the release workflow runs on.
VERSION ?= v0.0.0-dev
RELEASE_DIR ?= dist/release
RELEASE_BINARIES ?= $(BINARIES)
RELEASE_ARCHES ?= amd64 arm64

.PHONY: release-dry-run
release-dry-run: helm ## Build release VERSION without publishing (hack/release/build.sh): binaries and multi-arch OCI image archives for RELEASE_ARCHES, charts, changelog; checks the versions.
	VERSION="$(VERSION)" BINARIES="$(RELEASE_BINARIES)" ARCHES="$(RELEASE_ARCHES)" REGISTRY="$(REGISTRY)" HELM="$(HELM)" \
		./hack/release/build.sh "$(RELEASE_DIR)"

##@ Deployment

ifndef ignore-not-found
  ignore-not-found = false
endif

.PHONY: install
install: manifests kustomize ## Install the CRD into the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Remove the CRD. Call with ignore-not-found=true to ignore missing resources.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -f -

.PHONY: deploy
deploy: manifests kustomize ## Deploy the operator to the cluster of the current kubeconfig.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: kustomize ## Remove the operator. Call with ignore-not-found=true to ignore missing resources.
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -f -

##@ Dependencies

LOCALBIN ?= $(shell pwd)/bin
$(LOCALBIN):
	mkdir -p $(LOCALBIN)

KUBECTL ?= kubectl
KUSTOMIZE ?= $(LOCALBIN)/kustomize
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
HELM ?= $(LOCALBIN)/helm
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
ENVTEST ?= LOCALBIN=$(LOCALBIN) ./hack/envtest.sh

KUSTOMIZE_VERSION ?= v5.7.1
CONTROLLER_TOOLS_VERSION ?= v0.20.0
HELM_VERSION ?= v3.19.5
GOLANGCI_LINT_VERSION ?= v2.15.0
# ENVTEST_K8S_VERSION matches k8s.io/* v0.37 in go.mod; hack/envtest.sh reads it.
export ENVTEST_K8S_VERSION ?= 1.37.2

.PHONY: kustomize
kustomize: $(KUSTOMIZE) ## Download kustomize locally if necessary.
$(KUSTOMIZE): $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Download controller-gen locally if necessary.
$(CONTROLLER_GEN): $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: helm
helm: $(HELM) ## Download helm locally if necessary.
$(HELM): $(LOCALBIN)
	$(call go-install-tool,$(HELM),helm.sh/helm/v3/cmd/helm,$(HELM_VERSION))

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT) ## Download golangci-lint locally if necessary.
$(GOLANGCI_LINT): $(LOCALBIN)
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

.PHONY: envtest
envtest: ## Provide etcd and kube-apiserver for envtest (setup-envtest, or a build from the Go module proxy), cached outside the tree.
	@$(ENVTEST) >/dev/null

# go-install-tool will 'go install' any package with custom target and name of binary, if it doesn't exist
# $1 - target path with name of binary
# $2 - package url which can be installed
# $3 - specific version of package
define go-install-tool
@[ -f "$(1)-$(3)" ] && [ "$$(readlink -- "$(1)" 2>/dev/null)" = "$(1)-$(3)" ] || { \
set -e; \
package=$(2)@$(3) ;\
echo "Downloading $${package}" ;\
rm -f $(1) ;\
GOBIN=$(LOCALBIN) go install $${package} ;\
mv $(1) $(1)-$(3) ;\
} ;\
ln -sf $$(realpath $(1)-$(3)) $(1)
endef
