FROM ubuntu:14.04
MAINTAINER Jane Doe <jane@example.com>
ENV DEBIAN_FRONTEND noninteractive
ENV HOME /root
ENV   PATH   /usr/local/bin:$PATH
LABEL description This is legacy form
RUN apt-get update && \
    apt-get install -y \

      nginx \
    # comment inside a continuation
      && rm -rf /var/lib/apt/lists/*
ADD http://example.com/big.tar.xz /usr/src/things/
ADD rootfs.tar.gz /
VOLUME /var/log /var/lib/nginx
VOLUME ["/data"]
EXPOSE 80 443
STOPSIGNAL SIGQUIT
ONBUILD ADD . /app/src
ONBUILD RUN /usr/local/bin/python-build --dir /app/src
CMD nginx -g "daemon off;"
