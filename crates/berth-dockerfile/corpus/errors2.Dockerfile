FROM a b
ENV A
COPY onlyone
HEALTHCHECK --interval=5 CMD x
ONBUILD ONBUILD RUN x
SHELL /bin/sh -c
