# syntax=docker/dockerfile:1
# One Dockerfile, one target per binary:
#   docker build --target courier-operator -t ghcr.io/courier-dev/courier-operator .
#   docker build --target gateway -t ghcr.io/courier-dev/gateway .   (users, posts, mailer alike)
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS builder
ARG TARGETOS=linux
ARG TARGETARCH=amd64
WORKDIR /workspace
# Dependencies first, so the module download layer is cached across source edits.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY operator/ operator/
COPY services/ services/
# build_info reads the version and VCS revision from the binary's build
# information. Static binaries (no cgo: SQLite is the pure-Go modernc driver), so the final
# images need no libc.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    mkdir -p /out && \
    for b in operator/cmd:courier-operator services/gateway:gateway services/users:users services/posts:posts services/mailer:mailer; do \
      CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
        -ldflags "-s -w" \
        -o /out/${b#*:} ./${b%%:*} || exit 1; \
    done

# distroless/static runs as a non-root user; the operator gives every service
# a read-only root filesystem and a writable /tmp.
FROM gcr.io/distroless/static:nonroot AS base
USER 65532:65532

FROM base AS gateway
COPY --from=builder /out/gateway /gateway
ENTRYPOINT ["/gateway"]

FROM base AS users
COPY --from=builder /out/users /users
ENTRYPOINT ["/users"]

FROM base AS posts
COPY --from=builder /out/posts /posts
ENTRYPOINT ["/posts"]

FROM base AS mailer
COPY --from=builder /out/mailer /mailer
ENTRYPOINT ["/mailer"]

# Last, so a plain `docker build .` builds the operator.
FROM base AS courier-operator
COPY --from=builder /out/courier-operator /courier-operator
ENTRYPOINT ["/courier-operator"]
