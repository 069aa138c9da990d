# Build: docker build -t usher .
# Run:   docker run -p 8080:8080 -v $PWD/usher.yaml:/etc/usher/usher.yaml:ro -v usher-data:/data usher
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/usher ./cmd/usher \
 && mkdir -p /out/data

# The final image has the binary, CA roots and an empty data dir: no shell,
# no package manager, and it runs as an unprivileged user.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/usher /usr/local/bin/usher
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/usher"]
CMD ["serve", "--config", "/etc/usher/usher.yaml"]
