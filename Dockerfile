# syntax=docker/dockerfile:1
# One Dockerfile for every binary: docker build --build-arg BINARY=<name>, where
# <name> is courier-operator, gateway, users, posts or mailer.
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS builder
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG BINARY=courier-operator
ARG VERSION=dev
ARG REVISION=unknown
WORKDIR /workspace
# Dependencies first, so the module download layer is cached across source edits.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY operator/ operator/
COPY services/ services/
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    case "${BINARY}" in \
      courier-operator) pkg=./operator/cmd ;; \
      gateway|users|posts|mailer) pkg=./services/${BINARY} ;; \
      *) echo "unknown BINARY ${BINARY}" >&2; exit 1 ;; \
    esac && \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
      -ldflags "-s -w -X github.com/courier-dev/courier/services/kit.Version=${VERSION} -X github.com/courier-dev/courier/services/kit.Revision=${REVISION}" \
      -o /out/app "${pkg}"

# Static binaries need no libc; distroless/static runs them as a non-root user
# with a read-only root filesystem (the operator mounts a writable /tmp).
FROM gcr.io/distroless/static:nonroot
COPY --from=builder /out/app /app
USER 65532:65532
ENTRYPOINT ["/app"]
