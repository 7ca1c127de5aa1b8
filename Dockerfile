# syntax=docker/dockerfile:1
# One Dockerfile, one target per binary, for any platform:
#   docker buildx build --platform linux/amd64,linux/arm64 --target courier-operator \
#     --build-arg VERSION=v1.2.3 -t ghcr.io/courier-dev/courier-operator:v1.2.3 .
#   docker build --target gateway -t ghcr.io/courier-dev/gateway .   (users, posts, mailer alike)
# The release workflow (.github/workflows/release.yaml) builds and pushes
# them; `make release-dry-run` builds the same binaries and images here
# without Docker.
ARG GO_VERSION=1.26.8

# The builder runs on the build machine's platform and cross-compiles for
# the target's (no emulation: the binaries are pure Go, CGO off).
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS builder
ARG TARGETOS
ARG TARGETARCH
# The release's tag. When set, the build fails unless the Go toolchain
# stamped it into every binary.
ARG VERSION=""
WORKDIR /workspace
# Dependencies first, so the module download layer is cached across source edits.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
# The whole tree with .git (see .dockerignore): build_info reads the version
# and VCS revision the Go toolchain stamps from a clean checkout, so no
# -ldflags -X is needed. Static binaries (no cgo: SQLite is the pure-Go
# modernc driver), so the final images need no libc.
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    mkdir -p /out && \
    for b in operator/cmd:courier-operator services/gateway:gateway services/users:users services/posts:posts services/mailer:mailer; do \
      CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -buildvcs=true -trimpath \
        -ldflags "-s -w" \
        -o /out/${b#*:} ./${b%%:*} || exit 1; \
      if [ -n "${VERSION}" ]; then \
        go version -m /out/${b#*:} | grep -Eq "^\s+mod\s+github.com/courier-dev/courier\s+${VERSION}(\s|$)" || \
          { echo "${b#*:} is not stamped ${VERSION}:"; go version -m /out/${b#*:} | head -3; exit 1; }; \
      fi; \
    done

# distroless/static runs as a non-root user; the operator gives every service
# a read-only root filesystem and a writable /tmp.
FROM gcr.io/distroless/static:nonroot AS base
ARG VERSION=""
ARG REVISION=""
LABEL org.opencontainers.image.source="https://github.com/courier-dev/courier" \
      org.opencontainers.image.url="https://github.com/courier-dev/courier" \
      org.opencontainers.image.vendor="The Courier Authors" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 65532:65532

FROM base AS gateway
LABEL org.opencontainers.image.title="gateway" \
      org.opencontainers.image.description="The Courier blog's REST edge: verifies sign-in tokens and routes to users and posts."
COPY --from=builder /out/gateway /gateway
ENTRYPOINT ["/gateway"]

FROM base AS users
LABEL org.opencontainers.image.title="users" \
      org.opencontainers.image.description="The Courier blog's accounts and sign-in; publishes welcome e-mail jobs."
COPY --from=builder /out/users /users
ENTRYPOINT ["/users"]

FROM base AS posts
LABEL org.opencontainers.image.title="posts" \
      org.opencontainers.image.description="The Courier blog's posts and comments; publishes comment notification jobs."
COPY --from=builder /out/posts /posts
ENTRYPOINT ["/posts"]

FROM base AS mailer
LABEL org.opencontainers.image.title="mailer" \
      org.opencontainers.image.description="The Courier blog's mailer: consumes e-mail jobs and sends each once over SMTP."
COPY --from=builder /out/mailer /mailer
ENTRYPOINT ["/mailer"]

# Last, so a plain `docker build .` builds the operator.
FROM base AS courier-operator
LABEL org.opencontainers.image.title="courier-operator" \
      org.opencontainers.image.description="The Courier operator: runs MicroserviceApps, their broker, queues and credentials."
COPY --from=builder /out/courier-operator /courier-operator
ENTRYPOINT ["/courier-operator"]
