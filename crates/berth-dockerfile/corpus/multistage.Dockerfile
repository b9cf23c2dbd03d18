# syntax=docker/dockerfile:1
ARG GO_VERSION=1.22
ARG BASE=busybox:latest
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG TARGETOS TARGETARCH
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app ./cmd/app

FROM ${BASE} AS final
LABEL org.opencontainers.image.title="app" \
      org.opencontainers.image.description="a small \"app\"" version=1.0
COPY --from=build --chown=1000:1000 --chmod=755 /out/app /usr/local/bin/app
USER 1000:1000
EXPOSE 8080/tcp 9090/udp
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/app", "health"]
ENTRYPOINT ["/usr/local/bin/app"]
CMD ["serve", "--port=8080"]
