FROM busybox
RUN true
FOO bar
